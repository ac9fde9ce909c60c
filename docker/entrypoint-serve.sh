#!/bin/sh
# Start the MRD stream server on all interfaces (inside a container), port $CMRECON_PORT.
set -e
exec cmrecon serve --host "${CMRECON_HOST:-0.0.0.0}" --port "${CMRECON_PORT:-9002}" "$@"
