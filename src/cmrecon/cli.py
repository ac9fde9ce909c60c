"""``cmrecon``: one command, subcommands ``serve``, ``replay``, ``chains``, ``simulate``, ``demo``.

Each subcommand registers its own parser; handlers return an exit status and report failures
as one clear line on stderr (no traceback for expected errors).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from cmrecon import __version__
from cmrecon.errors import CmreconError


def _serve(args: argparse.Namespace) -> int:
    from cmrecon.server.tcp import MrdServer
    if not 0 <= args.port <= 65535:
        raise CmreconError(f"--port {args.port} is not a TCP port (0-65535)")
    if not args.read_ahead_mb > 0:
        raise CmreconError(f"--read-ahead-mb {args.read_ahead_mb:g} must be > 0")
    try:
        from cmrecon.chain.limits import SessionLimits
        # one --max-* option per SessionLimits field (build_parser makes them from the same fields)
        limits = SessionLimits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SessionLimits)})
        server = MrdServer(args.host, args.port, Path(args.chains) if args.chains else None,
                           max_connections=args.max_connections, idle_timeout_s=args.idle_timeout,
                           session_limits=limits, session_timeout_s=args.session_timeout,
                           min_rate_bps=args.min_rate, rate_grace_s=args.rate_grace,
                           header_timeout_s=args.header_timeout or None,
                           read_ahead_bytes=round(args.read_ahead_mb * 2**20))
    except OSError as exc:
        raise CmreconError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    logging.getLogger("cmrecon").info("cmrecon %s serving on %s:%d", __version__, args.host, server.port)
    import signal

    def stop(signum, frame):   # SIGTERM (a service manager, docker stop) ends like Ctrl-C
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    try:
        print(f"cmrecon serve: listening on {args.host}:{server.port}", file=sys.stderr, flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        logging.getLogger("cmrecon").info("cmrecon serve: stopping (signal); open sessions are closed")
    finally:
        server.server_close()
    print("cmrecon serve: stopped", file=sys.stderr, flush=True)
    return 0


def write_outputs(images: list, output: str | None, group: str | None, png_dir: str | None) -> None:
    """Write returned images to an ISMRMRD file (Gadgetron client layout) and/or PNGs.

    Every file is written atomically (:mod:`cmrecon.io.atomic`): whole, or not at all. If a PNG
    fails, the PNGs this call already wrote are removed; a finished ``output`` stays.

    Raises
    ------
    CmreconError
        A file cannot be written (``OutputError``: disk full, no permission...) or ``output``
        exists and is not an HDF5 file (``MrdFileError``).
    """
    if output:
        from cmrecon.io.mrdfile import ImageFileWriter
        with ImageFileWriter(output, group) as w:
            for img in images:
                w.append(img)
        print(f"wrote {len(images)} images to {output}:/{w.group}", file=sys.stderr)
    if png_dir:
        from cmrecon.io.images import display_view
        from cmrecon.io.png import save_png
        written: list[Path] = []
        try:
            for img in images:
                name = (f"series{img.image_series_index}_slc{img.slice}_set{img.set}_ave{img.average}"
                        f"_rep{img.repetition}_phs{img.phase}_img{img.image_index}.png")
                _, data, window = display_view(img)
                written.append(save_png(Path(png_dir) / name, data, window))
        except BaseException:   # a part of the images' PNGs is not an output
            for path in written:
                path.unlink(missing_ok=True)
            raise
        print(f"wrote {len(images)} PNGs to {png_dir}", file=sys.stderr)


def _query(args: argparse.Namespace) -> int:
    from cmrecon.server.client import ReplayError, query_server
    try:
        print(query_server(args.text, args.address, args.port, args.timeout))
    except ReplayError as exc:
        print(f"cmrecon query: error: {exc}", file=sys.stderr)
        return 1
    return 0


def check_output_paths(output: str | None, png_dir: str | None, dicom_dir: str | None = None) -> None:
    """Refuse outputs that cannot be written before any reconstruction runs.

    ``-o``: its folder must exist and be writable; an existing ``-o`` must be an HDF5 file (the
    images are added to it as a new group). ``--png``/``--dicom``: not an existing file.
    """
    if output:
        parent = Path(output).resolve().parent
        if not parent.is_dir():
            raise CmreconError(f"-o {output}: folder {parent} does not exist")
        if Path(output).is_dir():
            raise CmreconError(f"-o {output} is a folder; give an HDF5 file name")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise CmreconError(f"-o {output}: folder {parent} is not writable")
        if Path(output).exists():
            import h5py
            if not h5py.is_hdf5(output):
                raise CmreconError(f"-o {output} exists and is not an HDF5 file (images are added "
                                   f"to an existing file as a new group); give a new name")
    for flag, folder in (("--png", png_dir), ("--dicom", dicom_dir)):
        if folder and Path(folder).exists() and not Path(folder).is_dir():
            raise CmreconError(f"{flag} {folder} exists and is not a folder")


def _replay(args: argparse.Namespace) -> int:
    from cmrecon.server.client import replay_in_process, replay_remote
    if not Path(args.input).is_file():
        raise CmreconError(f"-i {args.input}: no such file")
    check_output_paths(args.output, args.png, args.dicom)
    if args.in_process:
        if args.chain_file:
            from cmrecon.chain.definition import load_file
            chain = load_file(args.chain_file)
        else:
            chain = args.chain
        result = replay_in_process(args.input, chain, group=args.input_group, show_progress=True)
    else:
        xml = Path(args.chain_file).read_text() if args.chain_file else None
        result = replay_remote(args.input, args.address, args.port,
                               chain_name=None if xml else args.chain, chain_xml=xml,
                               group=args.input_group, show_progress=True)
    for text in result.texts:
        print(f"server: {text}", file=sys.stderr)
    name = Path(args.chain_file).stem if args.chain_file else args.chain
    if not result.images:
        if not result.other:
            raise CmreconError(f"no images came back from chain '{name}' (sent {result.sent} items); "
                               f"nothing written")
        if args.output or args.png or args.dicom:
            raise CmreconError(f"no images came back from chain '{name}', only {len(result.other)} "
                               f"acquisitions/waveforms; nothing written")
    write_outputs(result.images, args.output, args.output_group, args.png)
    if args.dicom:
        from cmrecon.io.dicom import write_dicom
        from cmrecon.io.mrdfile import read_header_xml
        paths = write_dicom(result.images, args.dicom, read_header_xml(args.input, args.input_group), name)
        print(f"wrote {len(paths)} DICOM files to {args.dicom}", file=sys.stderr)
    print(f"replay: sent {result.sent} items, received {len(result.images)} images"
          + (f" and {len(result.other)} acquisitions/waveforms" if result.other else ""), file=sys.stderr)
    if result.images and not (args.output or args.png or args.dicom):
        print("replay: images not written (give -o FILE.h5 and/or --png DIR)", file=sys.stderr)
    return 0


def _chains(args: argparse.Namespace) -> int:
    from cmrecon.chain.definition import list_chains, load_file, resolve, to_xml
    from cmrecon.chain.registry import get_step
    if args.action == "list":
        for name in list_chains():
            chain = resolve(name)
            print(f"{name:20s} {chain.description.strip().splitlines()[0] if chain.description else ''}")
        return 0
    if args.action == "steps":
        from cmrecon.chain.registry import known_steps
        for name in known_steps():
            spec = get_step(name)
            print(f"{name:22s} {spec.summary}\n{'':22s} [{spec.flow}]")
        return 0
    if not args.target:
        raise CmreconError(f"'cmrecon chains {args.action}' needs a chain name or file")
    if (args.distributed or args.parallel_dimension) and args.action != "xml":
        raise CmreconError("--distributed and --parallel-dimension go with 'cmrecon chains xml'")
    if args.parallel_dimension and not args.distributed:
        raise CmreconError("--parallel-dimension needs --distributed")
    chain = load_file(args.target) if Path(args.target).suffix in (".yaml", ".yml", ".xml") and \
        Path(args.target).exists() else resolve(args.target)
    if args.action == "validate":
        print(f"{args.target}: valid chain '{chain.name}' with {len(chain.steps)} steps")
        return 0
    if args.action == "xml" and args.distributed:   # docs/gadgetron.md, "Distributed runs"
        from cmrecon.chain.distributed import to_distributed_xml
        sys.stdout.write(to_distributed_xml(chain, args.parallel_dimension or "slice"))
        return 0
    if args.action == "xml":
        sys.stdout.write(to_xml(chain))
        return 0
    if args.action == "ui-json":   # OpenRecon-style UI parameters (docs/protocol.md, "Parameter JSON")
        import json

        from cmrecon.chain.ui_params import ui_json
        sys.stdout.write(json.dumps(ui_json(chain), indent=2, allow_nan=False) + "\n")
        return 0
    print(f"chain {chain.name}: {chain.description.strip()}")
    for i, step in enumerate(chain.steps, 1):
        spec = get_step(step.name)
        print(f"  {i}. {step.name} [{spec.flow}] — {spec.summary}")
        for name, tname, default, doc in spec.describe_params():
            value = getattr(step.params, name)
            mark = "" if value == default else f" (default {default!r})"
            print(f"       {name}: {tname} = {value!r}{mark}  {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmrecon", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cmrecon {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS and torch threads per process for serve/replay/evaluate/demo "
                             "(default 1, or CMRECON_BLAS_THREADS / CMRECON_TORCH_THREADS; 0 = the "
                             "libraries' own defaults)")
    parser.add_argument("--workers", type=int, default=None,
                        help="compute threads that share a slice's independent pieces (GRAPPA "
                             "batches), one pool per process shared by every "
                             "connection (default: one per core, or CMRECON_WORKERS; 1 = serial)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the MRD stream server (Gadgetron protocol)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("-p", "--port", type=int, default=9002, help="TCP port (default 9002)")
    p.add_argument("--chains", help="directory of chain files (default: the repository's chains/)")
    p.add_argument("--max-connections", type=int, default=32)
    p.add_argument("--idle-timeout", type=float, default=300.0, help="seconds a silent client is kept")
    p.add_argument("--weights-path", action="append", metavar="DIR",
                   help="folder whose weights files a chain may name (repeatable or os.pathsep-separated; "
                        "default CMRECON_WEIGHTS_PATH; shipped weights are always allowed)")
    p.add_argument("--session-timeout", type=float, default=3600.0,
                   help="seconds one session may last (default 3600)")
    p.add_argument("--min-rate", type=float, default=256.0,
                   help="bytes/s a client must send while the server waits for it (time the chain "
                        "computes does not count), judged after --rate-grace seconds of waiting (default 256)")
    p.add_argument("--rate-grace", type=float, default=30.0,
                   help="seconds spent waiting for a client before --min-rate is judged (default 30)")
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds from connecting within which the CONFIG and HEADER must have arrived "
                        "(default 10; 0: no such deadline)")
    p.add_argument("--read-ahead-mb", type=float, default=8.0,
                   help="MiB of decoded messages a connection may hold before its chain takes them; "
                        "beyond it the server stops reading that client (default 8)")
    from cmrecon.chain.limits import SessionLimits
    for f in dataclasses.fields(SessionLimits):   # what one session's header and readouts may claim
        p.add_argument("--" + f.name.replace("_", "-"), type=int, default=f.default,
                       help=f"{f.metadata['doc']} a session may claim (default {f.default})")
    p.set_defaults(func=_serve)

    p = sub.add_parser("replay", help="stream a raw ISMRMRD file through a chain; write the images",
                       description="Stream a raw ISMRMRD file through a chain; write the images. Each "
                                   "output file is written whole or not at all. Exit 0 when images came "
                                   "back (or, without -o/--png/--dicom, only acquisitions, as from "
                                   "passthrough); 2 with one line on stderr when the input is unreadable, "
                                   "corrupt or has no acquisitions, nothing came back, the chain failed, "
                                   "or an output cannot be written (disk full, no permission).")
    p.add_argument("-i", "--input", required=True, help="raw ISMRMRD HDF5 dataset")
    p.add_argument("-c", "--chain", default="fft_rss", help="chain name (default fft_rss)")
    p.add_argument("-C", "--chain-file", help="send this chain XML inline (CONFIG_TEXT) instead")
    p.add_argument("-a", "--address", default="127.0.0.1", help="server address")
    p.add_argument("-p", "--port", type=int, default=9002)
    p.add_argument("--in-process", action="store_true", help="run the chain here, without a server")
    p.add_argument("-o", "--output", help="ISMRMRD HDF5 file for the images")
    p.add_argument("-G", "--output-group", help="group name in the output (default: date and time)")
    p.add_argument("--input-group", default="dataset")
    p.add_argument("--png", help="directory for one PNG per image")
    p.add_argument("--dicom", help="directory for DICOM MR images (one series per image role)")
    p.set_defaults(func=_replay)

    p = sub.add_parser("query", help="ask a running server a QUERY (gadgetron::health, "
                                     "gadgetron::version, cmrecon::chains); exit 1 without an answer")
    p.add_argument("text", nargs="?", default="gadgetron::health")
    p.add_argument("-a", "--address", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, default=9002)
    p.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    p.set_defaults(func=_query)

    p = sub.add_parser("chains", help="list, show or validate chains; write one as Gadgetron XML or "
                                      "OpenRecon-style UI-parameter JSON (ui-json)")
    p.add_argument("action", choices=["list", "show", "validate", "xml", "ui-json", "steps"])
    p.add_argument("target", nargs="?", help="chain name or file")
    p.add_argument("--distributed", action="store_true",
                   help="xml: Gadgetron XML that reconstructs each slice on a worker Gadgetron "
                        "(<distributed>; docs/gadgetron.md)")
    p.add_argument("--parallel-dimension", metavar="DIM",
                   help="xml --distributed: the header index to distribute by; only slice keeps a "
                        "slice's repeats, sets and phases together (default slice)")
    p.set_defaults(func=_chains)

    import importlib
    import importlib.util
    for module in ("cmrecon.demo", "cmrecon.sim.command", "cmrecon.models.train_cli", "cmrecon.evaluate",
                   "cmrecon.gadgetron_install", "cmrecon.models.weights_cli"):  # subcommands that register their own parsers
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = str(args.log_level).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        print(f"cmrecon: error: --log-level {args.log_level!r}: one of DEBUG, INFO, WARNING, ERROR",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from cmrecon.runtime import Settings, configure
        settings = configure(Settings.build(threads=args.threads, workers=args.workers,
                                            weights_path=getattr(args, "weights_path", None)))
        if args.command in ("serve", "replay", "evaluate", "demo"):
            from cmrecon.parallel import workers
            logging.getLogger("cmrecon").info(
                "threads: BLAS %s, torch %s (--threads, CMRECON_BLAS_THREADS, CMRECON_TORCH_THREADS); "
                "compute workers %d (--workers, CMRECON_WORKERS)",
                settings.blas_threads, settings.torch_threads, workers())
        return int(args.func(args) or 0)
    except CmreconError as exc:
        print(f"cmrecon {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:   # `cmrecon chains list | head`: the reader left; not an error of ours
        try:   # nothing more reaches the reader; let the exit-time flush go nowhere quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
