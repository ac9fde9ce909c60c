#!/bin/bash
# Gadgetron with cmrecon's interpreter first on PATH (externals start as `python -m gadgetron`).
set -eo pipefail
# shellcheck disable=SC1091
. /opt/conda/etc/profile.d/conda.sh
conda activate gadgetron
export PATH="/opt/conda/envs/cmrecon/bin:${PATH}"
exec gadgetron "$@"
