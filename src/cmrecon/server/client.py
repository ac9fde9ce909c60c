"""``cmrecon replay``: stream a raw ISMRMRD dataset to a server (ours or Gadgetron), or in-process.

The remote path sends from a thread while the main thread reads results, as
``gadgetron_ismrmrd_client`` does, so a server that streams images back early never blocks on
a full socket. The in-process path runs the same chain code without TCP.

Both read the whole input through once (:func:`cmrecon.io.mrdfile.check_dataset`) before they
send or run any of it, then read it again to send it: a corrupt row, an unreadable header or a
file without acquisitions is refused, naming the file (and row), before any of it reaches a
server. The second read is deliberate: a stream cannot be taken back. A real Gadgetron treats a
connection that breaks before CLOSE as if CLOSE had come (the channel its input thread fills
closes as the read error unwinds: ``process_input`` in apps/gadgetron/connection/Core.h, the
channel's ``Closer`` in core/Channel.cpp), so the rows sent before a corrupt one would be
reconstructed, and stored wherever its chain stores, as if they were the whole scan. The check
costs one more read of the file: 1.0-1.3 s of an 11-13 s fft_rss replay of a 512 MB,
15,424-readout file (page cache warm, two shared cores).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import ismrmrd

from cmrecon.chain.definition import Chain, resolve
from cmrecon.chain.runner import run_chain
from cmrecon.errors import CmreconError
from cmrecon.io import protocol as P
from cmrecon.io.mrdfile import MrdFileError, check_dataset, iter_items, read_header_xml
from cmrecon.progress import Progress


class ReplayError(CmreconError):
    """The server (or in-process chain) reported an error, or the connection failed."""


@dataclass
class ReplayResult:
    """What came back from one replay."""

    images: list[ismrmrd.Image] = field(default_factory=list)
    other: list[object] = field(default_factory=list)  # acquisitions/waveforms passed back
    texts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sent: int = 0
    connect_s: float = 0.0   # seconds the TCP connect took (0 in-process)


def _checked_input(path: str | Path, group: str) -> tuple[bytes, int, int]:
    """``(header, n_acquisitions, n_waveforms)`` of an input read through once; MrdFileError if unfit."""
    n_acq, n_wav = check_dataset(path, group)
    if n_acq == 0:
        raise MrdFileError(f"{path}:/{group} holds no acquisitions ({n_wav} waveforms); nothing to replay")
    return read_header_xml(path, group), n_acq, n_wav


def _source(path: str | Path, group: str, progress: Progress | None) -> Iterable[object]:
    for item in iter_items(path, group):
        yield item
        if progress:
            progress.update()


def _collect(item: object, result: ReplayResult, on_image: Callable[[ismrmrd.Image], None] | None) -> None:
    if isinstance(item, ismrmrd.Image):
        result.images.append(item)
        if on_image:
            on_image(item)
    else:
        result.other.append(item)


def replay_remote(path: str | Path, host: str = "127.0.0.1", port: int = 9002, *,
                  chain_name: str | None = None, chain_xml: str | None = None,
                  group: str = "dataset", on_image: Callable[[ismrmrd.Image], None] | None = None,
                  show_progress: bool = False, timeout_s: float = 600.0) -> ReplayResult:
    """Replay a dataset to a server and collect what it returns.

    Exactly one of ``chain_name`` (CONFIG_FILE) or ``chain_xml`` (CONFIG_TEXT) is sent.

    Raises
    ------
    MrdFileError
        The input cannot be read, has a corrupt row or no acquisitions (before anything is sent).
    ReplayError
        Connection refused/reset, the server sent ``ERR`` text, or the input failed while being
        sent; the message carries the cause.
    """
    if (chain_name is None) == (chain_xml is None):
        raise ValueError("give exactly one of chain_name or chain_xml")
    header, n_acq, n_wav = _checked_input(path, group)
    progress = Progress(f"replay {Path(path).name}", n_acq + n_wav, enabled=show_progress)
    result = ReplayResult()
    t0 = time.perf_counter()
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise ReplayError(f"cannot connect to {host}:{port}: {exc}") from exc
    result.connect_s = time.perf_counter() - t0
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    send_error: list[BaseException] = []
    answered = threading.Event()   # the server ended the session (CLOSE, ERR): stop sending

    def sender() -> None:
        wfile = sock.makefile("wb")
        writer = P.MessageWriter(wfile)
        try:
            writer.write(P.ConfigFile(chain_name) if chain_name is not None else P.ConfigText(chain_xml))
            writer.write(P.Header(header))
            for item in _source(path, group, progress):
                if answered.is_set():   # e.g. ERR unknown chain: the rest of the file is not wanted
                    return
                writer.write(item)
                result.sent += 1
            writer.write(P.Close())
            writer.flush()
        except OSError as exc:  # the server closed early: its reason arrives on the reader
            send_error.append(exc)
        except Exception as exc:  # the input failed part way: stop the session, wake the reader
            send_error.append(exc)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        finally:
            try:
                wfile.close()
            except OSError:
                pass

    thread = threading.Thread(target=sender, name="cmrecon-replay-send", daemon=True)
    thread.start()
    rfile = sock.makefile("rb")
    reader = P.MessageReader(rfile)
    try:
        while True:
            msg = reader.read()
            if msg is None:
                result.errors.append("server closed the connection without CLOSE")
                break
            if isinstance(msg, P.Close):
                break
            if isinstance(msg, P.Text):
                result.texts.append(msg.text)
                if msg.text.startswith("ERR"):
                    result.errors.append(msg.text[3:].strip())
            elif isinstance(msg, P.Error):
                result.errors.append(msg.text)
            elif isinstance(msg, P.Response):
                result.texts.append(msg.text)
            else:
                _collect(msg, result, on_image)
    except (OSError, CmreconError) as exc:
        result.errors.append(f"connection failed: {exc}")
    finally:
        answered.set()
        thread.join(timeout=timeout_s)
        rfile.close()   # the socket closes only once its file objects are closed too
        sock.close()
        progress.close()
    input_errors = [exc for exc in send_error if not isinstance(exc, OSError)]
    if input_errors:   # the cause, not the connection it broke
        raise ReplayError(f"sending {path} stopped: {input_errors[0]}")
    if result.errors:
        raise ReplayError("; ".join(result.errors))
    return result


def query_server(text: str, host: str = "127.0.0.1", port: int = 9002, timeout_s: float = 5.0) -> str:
    """Send one QUERY (e.g. ``gadgetron::health``) and return the server's RESPONSE text.

    Raises
    ------
    ReplayError
        No connection, no answer within ``timeout_s``, or an error reply.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock, \
                sock.makefile("wb") as wfile, sock.makefile("rb") as rfile:
            writer = P.MessageWriter(wfile)
            writer.write(P.Query(0, 1, text))
            writer.write(P.Close())
            writer.flush()
            reader = P.MessageReader(rfile)
            while True:
                msg = reader.read()
                if msg is None or isinstance(msg, P.Close):
                    raise ReplayError(f"{host}:{port} closed without answering the query {text!r}")
                if isinstance(msg, P.Response):
                    return msg.text
                if isinstance(msg, P.Text) and msg.text.startswith("ERR"):
                    raise ReplayError(msg.text[3:].strip())
    except (OSError, CmreconError) as exc:
        raise ReplayError(f"query {text!r} to {host}:{port} failed: {exc}") from exc


def replay_in_process(path: str | Path, chain: Chain | str, *, group: str = "dataset",
                      on_image: Callable[[ismrmrd.Image], None] | None = None,
                      show_progress: bool = False) -> ReplayResult:
    """Run a chain over a dataset in this process: the server's code path minus TCP.

    Raises
    ------
    ReplayError
        The chain could not be loaded; the input cannot be read, has a corrupt row or no
        acquisitions (found before the chain runs); or a step failed.
    """
    try:
        if isinstance(chain, str):
            chain = resolve(chain)
        header, n_acq, n_wav = _checked_input(path, group)
        progress = Progress(f"replay {Path(path).name} (in-process)", n_acq + n_wav,
                            enabled=show_progress)
        result = ReplayResult()

        def counted() -> Iterable[object]:
            for item in _source(path, group, progress):
                result.sent += 1
                yield item

        for item in run_chain(chain, header, counted()):
            # the same bytes a socket would carry: serialise and decode every output
            _collect(_wire_copy(item), result, on_image)
        progress.close()
        return result
    except CmreconError as exc:
        raise ReplayError(str(exc)) from exc


def _wire_copy(item: object) -> object:
    """Round-trip an item through the wire encoding, as the TCP path does."""
    import io
    return P.MessageReader(io.BytesIO(P.encode(item))).read()
