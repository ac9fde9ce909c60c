"""``cmrecon gadgetron install``: make a Gadgetron installation run our chains by name.

A Gadgetron resolves ``CONFIG_FILE`` names (what a scanner console or
``gadgetron_ismrmrd_client -c NAME.xml`` sends) in ``<home>/share/gadgetron/config``, and
starts every ``<external>`` with the first ``python`` (else ``python3``) on its ``PATH`` as
``python -m gadgetron <port> cmrecon_gadgets steps``. This command:

1. writes every shipped chain's Gadgetron XML into that folder as ``<name>.xml`` (the console
   selects ``psirnet_lge.xml`` as ``cmrecon serve`` resolves it), each via a temporary file;
2. checks that the Python Gadgetron will start imports ``cmrecon_gadgets`` and the ``gadgetron``
   package (and how long that takes: the stock client gives up after 10 s);
3. compares the ISMRMRD schema version the server's library was built with (its
   ``libismrmrd.so.1.N``) with this installation's, because a mismatching ``<version>`` in the
   data's header fails every external step.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cmrecon.errors import CmreconError
from cmrecon.io.atomic import atomic_path


@dataclass
class InstallReport:
    """What :func:`install` did and found."""

    config_dir: Path
    written: list[str] = field(default_factory=list)
    python: str = ""
    import_ok: bool = False
    import_s: float = 0.0
    import_error: str = ""
    server_schema: int | None = None
    warnings: list[str] = field(default_factory=list)


def gadgetron_python(path: str | None = None) -> str | None:
    """The interpreter a Gadgetron would start: ``python`` else ``python3`` on ``path``."""
    for name in ("python", "python3"):
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


def server_schema_version(home: Path) -> int | None:
    """ISMRMRD minor release (= XML schema version) of the library the server links.

    Looks for ``libismrmrd.so.1.N`` in ``home/lib`` and, failing that, in what ``ldd`` says
    ``home/bin/gadgetron`` loads. None when neither tells.
    """
    pattern = re.compile(r"libismrmrd\.so\.1\.(\d+)")
    for lib in sorted((home / "lib").glob("libismrmrd.so.1.*")) if (home / "lib").is_dir() else []:
        m = pattern.search(lib.name)
        if m:
            return int(m.group(1))
    exe = home / "bin" / "gadgetron"
    if exe.exists() and shutil.which("ldd"):
        out = subprocess.run(["ldd", str(exe)], capture_output=True, text=True).stdout
        m = pattern.search(out)
        if m:
            return int(m.group(1))
    return None


def install(home: Path, path: str | None = None, python: str | None = None,
            dry_run: bool = False) -> InstallReport:
    """Install the chains into Gadgetron ``home`` and check the Python side; see the module doc.

    Raises
    ------
    CmreconError
        ``home`` is not a Gadgetron installation (no ``share/gadgetron/config``).
    """
    from cmrecon.chain.definition import list_chains, resolve, to_xml
    from cmrecon.io.header import schema_version

    config_dir = home / "share" / "gadgetron" / "config"
    if not config_dir.is_dir():
        raise CmreconError(f"{home} is not a Gadgetron installation: {config_dir} does not exist")
    report = InstallReport(config_dir)
    for name in list_chains():
        target = config_dir / f"{name}.xml"
        if not dry_run:
            with atomic_path(target) as tmp:
                tmp.write_text(to_xml(resolve(name)), encoding="utf-8")
        report.written.append(target.name)
    report.python = python or gadgetron_python(path) or ""
    if not report.python:
        report.warnings.append("no `python` or `python3` on the PATH Gadgetron will use: it cannot "
                               "start any external step")
    else:
        t0 = time.perf_counter()
        run = subprocess.run([report.python, "-c", "import gadgetron, cmrecon_gadgets"],
                             capture_output=True, text=True, timeout=120)
        report.import_s = time.perf_counter() - t0
        report.import_ok = run.returncode == 0
        if not report.import_ok:
            report.import_error = (run.stderr.strip().splitlines() or ["?"])[-1]
            report.warnings.append(f"{report.python} cannot import the external steps "
                                   f"({report.import_error}): put the venv holding cmrecon and "
                                   "the `gadgetron` package first on Gadgetron's PATH")
        elif report.import_s > 5.0:
            report.warnings.append(f"starting an external step takes {report.import_s:.1f} s there; "
                                   "the stock client gives up after 10 s")
    report.server_schema = server_schema_version(home)
    ours = schema_version()
    if report.server_schema is not None and report.server_schema != ours:
        report.warnings.append(
            f"the server's ISMRMRD is 1.{report.server_schema} (schema {report.server_schema}); "
            f"data written here carry <version>{ours}</version>, which its externals refuse: "
            f"use ismrmrd 1.{report.server_schema} here or strip <version> from the headers")
    return report


def _run(args: argparse.Namespace) -> int:
    report = install(Path(args.home), path=args.path, python=args.python, dry_run=args.dry_run)
    verb = "would write" if args.dry_run else "wrote"
    print(f"{verb} {len(report.written)} chains into {report.config_dir}: {', '.join(report.written)}")
    if report.python:
        state = (f"imports cmrecon_gadgets in {report.import_s:.1f} s" if report.import_ok
                 else "cannot import cmrecon_gadgets")
        print(f"Gadgetron's python: {report.python} ({state})")
    if report.server_schema is not None:
        print(f"server ISMRMRD schema version: {report.server_schema}")
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"select a chain by name, e.g. gadgetron_ismrmrd_client -f raw.h5 -c {report.written[0] if report.written else 'psir_classic.xml'}")
    return 1 if report.warnings else 0


def register(subparsers) -> None:
    """Add ``cmrecon gadgetron install`` to the CLI."""
    p = subparsers.add_parser("gadgetron", help="install the chains into a Gadgetron installation")
    sub = p.add_subparsers(dest="gadgetron_command", required=True)
    q = sub.add_parser("install", help="write every chain's XML into GADGETRON_HOME/share/gadgetron/config "
                                       "and check the Python that Gadgetron will start")
    q.add_argument("--home", required=True, help="Gadgetron installation prefix (GADGETRON_HOME)")
    q.add_argument("--path", default=None, help="the PATH Gadgetron runs with (default: this PATH)")
    q.add_argument("--python", default=None, help="check this interpreter instead of PATH's python")
    q.add_argument("--dry-run", action="store_true", help="check only, write nothing")
    q.set_defaults(func=_run)
