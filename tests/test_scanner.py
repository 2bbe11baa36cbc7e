"""The Scanner seam: one contract run against the real clamd and the in-memory scanner."""

from __future__ import annotations

import errno
import io
import logging
import os
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from clamd_server import (
    EICAR,
    EICAR_SIGNATURE,
    IMAGE_SIGNATURE,
    Clamd,
    HeldClamd,
    SplitReplies,
    image_then_zip_bomb,
)
from conftest import MountTmpfs
from helpers import image_bytes, wait_until
from hotfolder.config import ScannerConfig
from hotfolder.errors import InputError, Unavailable
from hotfolder.scanner import (
    ClamdScanner,
    MemoryScanner,
    Scanner,
    Untrusted,
    Verdict,
    make_scanner,
    parse_address,
    parse_fd_reply,
    probe_bytes,
    sealed_copy,
)
from server_process import free_port

# Above the test clamds' StreamMaxLength, below the roomy one's MaxFileSize.
ROOMY_MAX_BYTES = 10 * 1024 * 1024


@pytest.fixture
def samples(tmp_path: Path) -> dict[str, Path]:
    """A clean image, the signed test image and EICAR, as files."""
    files = {"clean.png": image_bytes("PNG", (32, 32), seed=2),
             "signed.png": image_bytes("PNG", (32, 32), seed=1), "eicar.com": EICAR}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name.split(".")[0]: tmp_path / name for name in files}


@pytest.fixture(scope="module")
def roomy_clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    """A clamd that reads files whole up to 12 MB, and takes streams only up to 8 MB."""
    server = Clamd(tmp_path_factory.mktemp("roomy-clamd"), file_max_bytes=12 * 1024 * 1024)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def scan_file(scanner: Scanner, path: Path) -> Verdict:
    """The scanner's verdict on a file's bytes, as a job reads them."""
    return scanner.scan(path.read_bytes(), path.name)


class ScannerContract:
    """What every Scanner does; subclasses provide `scanner` and an unavailable `offline` one."""

    def test_clean_image_is_clean(self, scanner: Scanner, samples: dict[str, Path]) -> None:
        verdict = scan_file(scanner, samples["clean"])
        assert verdict.clean
        assert verdict.signature is None

    def test_eicar_is_found(self, scanner: Scanner, samples: dict[str, Path]) -> None:
        verdict = scan_file(scanner, samples["eicar"])
        assert not verdict.clean
        assert verdict.signature is not None
        assert verdict.signature.startswith(EICAR_SIGNATURE)

    def test_signed_image_is_found(self, scanner: Scanner, samples: dict[str, Path]) -> None:
        verdict = scan_file(scanner, samples["signed"])
        assert not verdict.clean
        assert verdict.signature is not None
        assert verdict.signature.startswith(IMAGE_SIGNATURE)

    def test_answers_ping(self, scanner: Scanner) -> None:
        assert scanner.ping()

    def test_unavailable_is_never_clean(self, offline: Scanner, samples: dict[str, Path]) -> None:
        with pytest.raises(Unavailable) as info:
            scan_file(offline, samples["clean"])
        assert info.value.message.startswith("clean.png could not be scanned: ")
        assert info.value.stage == "scan"
        assert not offline.ping()


class TestMemoryScanner(ScannerContract):
    @pytest.fixture
    def scanner(self) -> MemoryScanner:
        scanner = MemoryScanner()
        scanner.sign(EICAR, EICAR_SIGNATURE)
        scanner.sign(image_bytes("PNG", (32, 32), seed=1), IMAGE_SIGNATURE)
        return scanner

    @pytest.fixture
    def offline(self) -> MemoryScanner:
        return MemoryScanner(available=False)

    def test_records_what_it_scanned(self, scanner: MemoryScanner,
                                     samples: dict[str, Path]) -> None:
        scan_file(scanner, samples["clean"])
        assert scanner.scanned == ["clean.png"]


class TestClamdScanner(ScannerContract):
    @pytest.fixture
    def scanner(self, clamd: Clamd) -> ClamdScanner:
        return ClamdScanner(clamd.address, timeout=10)

    @pytest.fixture
    def offline(self, tmp_path: Path) -> ClamdScanner:
        return ClamdScanner(f"unix://{tmp_path}/no-clamd.sock")

    def test_fixture_files_are_what_clamd_knows(self, scanner: ClamdScanner,
                                                clamd: Clamd) -> None:
        assert scan_file(scanner, clamd.signed_image).signature == f"{IMAGE_SIGNATURE}.UNOFFICIAL"
        assert scan_file(scanner, clamd.clean_image).clean

    def test_eicar_inside_a_zip_is_found(self, scanner: ClamdScanner, tmp_path: Path) -> None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("readme.txt", "nothing to see")
            archive.writestr("tools/eicar.com", EICAR)
        path = tmp_path / "bundle.zip"
        path.write_bytes(buffer.getvalue())
        verdict = scan_file(scanner, path)
        assert not verdict.clean
        assert verdict.signature == f"{EICAR_SIGNATURE}.UNOFFICIAL"

    def test_missing_socket_says_clamd_is_not_reachable(self, offline: ClamdScanner,
                                                        samples: dict[str, Path]) -> None:
        with pytest.raises(Unavailable, match=r"clamd at unix://.*no-clamd.sock is not reachable"):
            scan_file(offline, samples["clean"])

    def test_stopped_clamd_is_unavailable_until_it_is_back(
        self, scanner: ClamdScanner, clamd: Clamd, samples: dict[str, Path]
    ) -> None:
        with clamd.stopped():
            assert not scanner.ping()
            with pytest.raises(Unavailable, match="is not reachable"):
                scan_file(scanner, samples["eicar"])
        assert scanner.ping()
        assert not scan_file(scanner, samples["eicar"]).clean

    def test_file_over_max_file_size_is_never_clean(
        self, scanner: ClamdScanner, clamd: Clamd, tmp_path: Path
    ) -> None:
        # clamd reads only MaxFileSize bytes of it: an OK would prove nothing.
        path = tmp_path / "poster.bmp"
        path.write_bytes(bytes(clamd.file_max_bytes + 1024))
        with pytest.raises(InputError, match=r"scanned whole: .* scanning limit .*MaxFileSize"):
            scan_file(scanner, path)

    def test_an_archive_past_max_scan_size_is_never_clean(
        self, scanner: ClamdScanner, tmp_path: Path
    ) -> None:
        path = tmp_path / "photo.jpg"
        path.write_bytes(image_then_zip_bomb())
        with pytest.raises(InputError, match=r"scanning limit .*MaxScanSize.* not taken as clean"):
            scan_file(scanner, path)

    def test_replies_in_two_pieces_are_read_whole(
        self, split_clamd: SplitReplies, samples: dict[str, Path]
    ) -> None:
        scanner = ClamdScanner(split_clamd.address, timeout=10)
        assert scan_file(scanner, samples["eicar"]).signature == f"{EICAR_SIGNATURE}.UNOFFICIAL"
        assert scan_file(scanner, samples["clean"]).clean
        assert scanner.ping()

    def test_the_probe_passes_a_clamd_that_reads_files_of_the_largest_size_whole(
        self, clamd: Clamd
    ) -> None:
        assert ClamdScanner(clamd.address, max_bytes=clamd.file_max_bytes - 1024).check_limits() \
            is None

    def test_a_clamd_whose_limits_are_below_the_largest_size_is_not_trusted(
        self, clamd: Clamd, samples: dict[str, Path]
    ) -> None:
        over_file = ClamdScanner(clamd.address, max_bytes=clamd.file_max_bytes + 1024)
        assert "raise MaxFileSize and MaxScanSize" in str(over_file.check_limits())
        with pytest.raises(Untrusted, match=r"clean.png could not be scanned: .*MaxFileSize"):
            scan_file(over_file, samples["clean"])
        assert not over_file.ping()

    @pytest.mark.parametrize(("spare", "trusted"), [(-1024, True), (1024, False)])
    def test_a_probe_ahead_is_what_the_next_ping_finds(
        self, clamd: Clamd, caplog: pytest.LogCaptureFixture, spare: int, trusted: bool
    ) -> None:
        scanner = ClamdScanner(clamd.address, max_bytes=clamd.file_max_bytes + spare)
        scanner.probe_ahead()
        with caplog.at_level(logging.ERROR, logger="hotfolder.scanner"):
            assert scanner.ping() is trusted
        assert ("raise MaxFileSize and MaxScanSize" in caplog.text) is not trusted
        assert not any(t.name.startswith("scanner-probe") for t in threading.enumerate())

    def test_the_eicar_check_is_scanned_while_the_file_is(
        self, held_clamd: HeldClamd, samples: dict[str, Path]
    ) -> None:
        # Passed alongside the file, not after its verdict: clamd scans both at once.
        scanner = ClamdScanner(held_clamd.address, timeout=30)
        assert scanner.ping()  # the probe, found
        before = held_clamd.found
        verdicts: list[Verdict] = []
        scanning = threading.Thread(target=lambda: verdicts.append(
            scan_file(scanner, samples["clean"])))
        scanning.start()
        try:
            wait_until(lambda: held_clamd.holding == 1 and held_clamd.found == before + 1, 10,
                       "the EICAR check found while the file's scan is held")
        finally:
            held_clamd.let_through()
            scanning.join(30)
        assert verdicts == [Verdict(clean=True, signature=None, scanner=scanner.name)]

    def test_a_clamd_that_answers_ok_for_what_it_skipped_is_not_trusted(
        self, small_clamd: Clamd, samples: dict[str, Path], tmp_path: Path
    ) -> None:
        scanner = ClamdScanner(small_clamd.address, timeout=10,
                               max_bytes=2 * small_clamd.file_max_bytes)
        padded = tmp_path / "padded.bin"  # what the probe sends: clamd skips it and says OK
        padded.write_bytes(probe_bytes(2 * small_clamd.file_max_bytes))
        assert scan_file(ClamdScanner(small_clamd.address), padded).clean
        problem = scanner.check_limits()
        assert problem is not None and "set AlertExceedsMax yes" in problem
        with pytest.raises(Untrusted, match=r"clean.png could not be scanned: .*AlertExceedsMax"):
            scan_file(scanner, samples["clean"])
        assert not scanner.ping()
        # Files up to its MaxFileSize are read whole: a root accepting no more is served.
        fitting = ClamdScanner(small_clamd.address, max_bytes=small_clamd.file_max_bytes - 1024)
        assert fitting.check_limits() is None
        assert scan_file(fitting, samples["clean"]).clean
        assert not scan_file(fitting, samples["eicar"]).clean

    def test_file_just_under_the_limits_is_scanned(
        self, scanner: ClamdScanner, clamd: Clamd, tmp_path: Path
    ) -> None:
        path = tmp_path / "large.bin"
        path.write_bytes(bytes(clamd.file_max_bytes - 1024))
        assert scan_file(scanner, path).clean

    def test_a_clamd_without_its_temporary_folder_passes_nothing(
        self, scanner: ClamdScanner, clamd: Clamd, samples: dict[str, Path]
    ) -> None:
        # clamd then answers OK for any file passed to it, EICAR too, without scanning it.
        assert scan_file(scanner, samples["clean"]).clean
        with clamd.temp_dir_away():
            for sample in ("clean", "eicar", "signed"):
                with pytest.raises(Untrusted, match=r"could not be scanned: .* answered OK for"
                                   r" the EICAR test file.*check TemporaryDirectory"):
                    scan_file(scanner, samples[sample])
            assert not scanner.ping()
        assert scan_file(scanner, samples["clean"]).clean  # probed again: clamd sees again
        assert not scan_file(scanner, samples["eicar"]).clean

    def test_a_clamd_that_takes_no_descriptor_gets_the_files_streamed(
        self, split_clamd: SplitReplies, clamd: Clamd, samples: dict[str, Path],
        caplog: pytest.LogCaptureFixture
    ) -> None:
        scanner = ClamdScanner(split_clamd.address, timeout=10)
        with caplog.at_level(logging.INFO, logger="hotfolder.scanner"):
            assert scan_file(scanner, samples["clean"]).clean
        assert "takes no file descriptor (FILDES): files are streamed to it" in caplog.text
        assert scan_file(scanner, samples["eicar"]).signature == f"{EICAR_SIGNATURE}.UNOFFICIAL"
        assert scan_file(scanner, samples["signed"]).signature == f"{IMAGE_SIGNATURE}.UNOFFICIAL"
        # Streamed, a file must first be written down by clamd.
        with clamd.temp_dir_away(), pytest.raises(Unavailable, match="without a verdict"):
            scan_file(scanner, samples["clean"])

    def test_stream_max_length_counts_only_for_files_streamed(
        self, roomy_clamd: Clamd, tmp_path: Path
    ) -> None:
        assert ClamdScanner(roomy_clamd.address, max_bytes=ROOMY_MAX_BYTES).check_limits() is None
        relay = SplitReplies(roomy_clamd, tmp_path)
        try:
            problem = ClamdScanner(relay.address, max_bytes=ROOMY_MAX_BYTES).check_limits()
        finally:
            relay.close()
        assert "raise StreamMaxLength" in str(problem)

    def test_a_clamd_that_stops_taking_descriptors_is_probed_again_for_streams(
        self, roomy_clamd: Clamd, samples: dict[str, Path], tmp_path: Path
    ) -> None:
        address = tmp_path / "clamd.sock"
        address.symlink_to(roomy_clamd.socket)
        scanner = ClamdScanner(f"unix://{address}", timeout=10, max_bytes=ROOMY_MAX_BYTES)
        assert scan_file(scanner, samples["clean"]).clean
        relay = SplitReplies(roomy_clamd, tmp_path)
        try:  # the same address now leads to a clamd that takes no descriptor
            address.unlink()
            address.symlink_to(relay.socket)
            with pytest.raises(Untrusted, match=r"clean.png could not be scanned: .*StreamMax"):
                scan_file(scanner, samples["clean"])
        finally:
            relay.close()

    def test_silent_clamd_times_out(self, clamd: Clamd, samples: dict[str, Path]) -> None:
        scanner = ClamdScanner(clamd.address, timeout=0.5)
        with clamd.frozen(), pytest.raises(Unavailable, match=r"did not answer within 0.5 s"):
            scan_file(scanner, samples["clean"])
        assert scanner.ping()


class TestClamdScannerOverTcp(ScannerContract):
    @pytest.fixture
    def scanner(self, clamd: Clamd) -> ClamdScanner:
        return ClamdScanner(clamd.tcp_address, timeout=10)

    @pytest.fixture
    def offline(self) -> ClamdScanner:
        return ClamdScanner(f"tcp://127.0.0.1:{free_port()}", timeout=2)

    def test_refused_port_says_clamd_is_not_reachable(self, offline: ClamdScanner,
                                                      samples: dict[str, Path]) -> None:
        with pytest.raises(Unavailable, match=f"clamd at {offline.address} is not reachable"):
            scan_file(offline, samples["clean"])

    def test_file_over_stream_max_length_is_unavailable(
        self, scanner: ClamdScanner, clamd: Clamd, tmp_path: Path
    ) -> None:
        big = tmp_path / "poster.tiff"
        big.write_bytes(os.urandom(clamd.stream_max_bytes + 1024 * 1024))
        with pytest.raises(Unavailable, match="larger than its StreamMaxLength") as info:
            scan_file(scanner, big)
        assert info.value.message.startswith("poster.tiff could not be scanned")
        assert scanner.ping()
        over_stream = ClamdScanner(clamd.tcp_address, max_bytes=clamd.stream_max_bytes + 1024)
        assert "raise StreamMaxLength" in str(over_stream.check_limits())

    def test_hang_up_without_a_reply_is_not_clean(
        self, scanner: ClamdScanner, clamd: Clamd, samples: dict[str, Path]
    ) -> None:
        # clamd closes the connection silently when it cannot write a stream down.
        with clamd.temp_dir_away(), pytest.raises(Unavailable, match="without a verdict"):
            scan_file(scanner, samples["clean"])
        assert scan_file(scanner, samples["clean"]).clean


@pytest.mark.parametrize(("address", "target"), [
    ("unix:///run/clamav/clamd.ctl", "/run/clamav/clamd.ctl"),
    ("tcp://127.0.0.1:3310", ("127.0.0.1", 3310)),
    ("tcp://[::1]:3310", ("::1", 3310)),
])
def test_parse_address(address: str, target: object) -> None:
    assert parse_address(address) == target


@pytest.mark.parametrize("address", ["unix://relative.sock", "tcp://host", "tcp://:3310", "off"])
def test_parse_address_refuses_nonsense(address: str) -> None:
    with pytest.raises(ValueError, match="is not unix:///path/to/socket or tcp://host:port"):
        parse_address(address)


def test_the_passed_copy_holds_the_bytes_and_no_one_can_change_them() -> None:
    data = image_bytes("PNG", (32, 32), seed=2)
    with sealed_copy(data) as fd:
        assert os.pread(fd, len(data) + 1, 0) == data
        for change in (lambda: os.pwrite(fd, b"x", 0), lambda: os.ftruncate(fd, 1),
                       lambda: os.ftruncate(fd, len(data) + 1)):
            with pytest.raises(PermissionError) as info:
                change()
            assert info.value.errno == errno.EPERM


@pytest.mark.parametrize(("reply", "said"), [
    ("fd[11]: OK\n", ("OK", "")),
    ("fd[11]: Eicar-Test-Signature.UNOFFICIAL FOUND\n",
     ("FOUND", "Eicar-Test-Signature.UNOFFICIAL")),
    ("fd[11]: Heuristics.Limits.Exceeded.MaxFileSize FOUND\n",
     ("FOUND", "Heuristics.Limits.Exceeded.MaxFileSize")),
    ("fd[11]: Can't allocate memory ERROR\n", ("ERROR", "Can't allocate memory")),
    ("fd[11]: something else\n", ("ERROR", "something else")),
    ("No file descriptor received. ERROR\n", None),
    ("FILDES support not compiled in. ERROR\n", None),
    ("UNKNOWN COMMAND\n", None),
])
def test_fildes_replies(reply: str, said: tuple[str, str] | None) -> None:
    assert parse_fd_reply(reply) == said


def test_make_scanner_follows_the_configuration() -> None:
    assert make_scanner(ScannerConfig(clamd="off"), 1024) is None
    scanner = make_scanner(ScannerConfig(clamd="tcp://127.0.0.1:3310", timeout_seconds=7), 1024)
    assert isinstance(scanner, ClamdScanner)
    assert (scanner.address, scanner.timeout) == ("tcp://127.0.0.1:3310", 7)


CLAMD_LOCAL = Path(__file__).resolve().parent.parent / "scripts/clamd-local"


def clamd_local(root: Path, *options: str, tmpfs: Path) -> subprocess.CompletedProcess[str]:
    """scripts/clamd-local on root, its temporary folder looked for on `tmpfs`."""
    return subprocess.run([str(CLAMD_LOCAL), *options, str(root)], capture_output=True,
                          text=True, timeout=180, check=False,
                          env={**os.environ, "HOTFOLDER_CLAMD_TMPFS": str(tmpfs)})


def temporary_directory(root: Path) -> Path:
    """The TemporaryDirectory that scripts/clamd-local wrote into the root's clamd.conf."""
    for line in (root / "state" / "clamd.conf").read_text().splitlines():
        if line.startswith("TemporaryDirectory "):
            return Path(line.split(" ", 1)[1])
    raise AssertionError("clamd.conf sets no TemporaryDirectory")


@pytest.mark.parametrize(("size", "on_tmpfs"), [("4g", True), ("3m", False)])
def test_clamd_local_script_serves_a_demo_root(tmp_path: Path, tmpfs: MountTmpfs, size: str,
                                               on_tmpfs: bool) -> None:
    # A tmpfs with room for what clamd's threads may unpack takes its temporary folders
    # (a folder made and removed for every scan); a small one does not.
    shm, root = tmpfs("shm", size), tmp_path / "root"
    root.mkdir()
    started = clamd_local(root, tmpfs=shm)
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"unix://{root}/state/clamd.sock"
        assert ("using a TEST database that knows only the EICAR test file" in started.stderr
                or "using the official signature database" in started.stderr)
        folder = temporary_directory(root)
        assert folder.parent == (shm if on_tmpfs else root / "state")
        assert folder.is_dir()
        assert folder.stat().st_mode & 0o077 == 0
        verdict = ClamdScanner(started.stdout.strip(), timeout=10).scan(EICAR, "eicar.com")
        assert verdict.signature is not None
        assert verdict.signature.startswith(EICAR_SIGNATURE)
        assert ClamdScanner(started.stdout.strip(), timeout=10).scan(b"plain text", "a.txt").clean
    finally:
        stopped = clamd_local(root, "--stop", tmpfs=shm)
    assert stopped.stdout.startswith("clamd-local: stopped clamd of ")
    assert not folder.exists()
    assert list(shm.iterdir()) == []

