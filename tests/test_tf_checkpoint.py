"""kzoo.formats.tf_checkpoint: V1/V2/folder/archive reading, and the errors for bad inputs."""

import gzip
import io
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from _ckpt_helpers import make_tar, make_zip, v2_files, write_checkpoint  # noqa: E402

from kzoo.errors import ConversionError, UnsafeArchive  # noqa: E402
from kzoo.formats.archives import ArchiveLimits, extract_archive  # noqa: E402
from kzoo.formats.tf_checkpoint import open_checkpoint  # noqa: E402

ARRAYS = {
    "net/conv1/weights": np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4),
    "net/conv1/biases": np.linspace(-1, 1, 4).astype(np.float32),
    "global_step": np.array(7, dtype=np.int64),
    "net/big": np.random.default_rng(0).normal(size=(64, 256)).astype(np.float32),
}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    v1 = write_checkpoint(root / "v1" / "net.ckpt", ARRAYS, "V1")
    v2 = write_checkpoint(root / "v2" / "model.ckpt", ARRAYS, "V2")
    return {"root": root, "V1": Path(v1), "V2": Path(v2)}


def _check_contents(ckpt):
    shapes = ckpt.shapes()
    assert shapes["net/conv1/weights"] == (1, 2, 3, 4)
    for name, value in ARRAYS.items():
        np.testing.assert_array_equal(ckpt.read(name), value)


@pytest.mark.parametrize("which", ["V1", "V2"])
def test_reads_file_and_prefix(ckpts, which):
    with open_checkpoint(ckpts[which]) as ckpt:
        assert ckpt.format == which
        _check_contents(ckpt)
        assert ckpt.nbytes == sum(f.stat().st_size for f in ckpt.files)


def test_v2_by_index_data_or_folder(ckpts):
    prefix = ckpts["V2"]
    for src in (Path(str(prefix) + ".index"), Path(str(prefix) + ".data-00000-of-00001"), prefix.parent):
        with open_checkpoint(src) as ckpt:
            assert ckpt.format == "V2" and ckpt.path == str(prefix)
            _check_contents(ckpt)


def test_v1_in_folder(ckpts):
    with open_checkpoint(ckpts["V1"].parent) as ckpt:
        assert ckpt.format == "V1"
        _check_contents(ckpt)


def test_folder_with_two_checkpoints(ckpts, tmp_path):
    for name in ("a.ckpt", "b.ckpt"):
        shutil.copy(ckpts["V1"], tmp_path / name)
    with pytest.raises(ConversionError, match="several checkpoints.*a.ckpt.*b.ckpt"):
        open_checkpoint(tmp_path)
    with open_checkpoint(tmp_path, hint="b") as ckpt:  # the model name breaks the tie
        assert Path(ckpt.path).name == "b.ckpt"
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "a.ckpt"\n')
    with open_checkpoint(tmp_path) as ckpt:  # so does a TF state file
        assert Path(ckpt.path).name == "a.ckpt"


def test_missing_index(ckpts, tmp_path):
    data = Path(str(ckpts["V2"]) + ".data-00000-of-00001")
    shutil.copy(data, tmp_path / data.name)
    for src in (tmp_path / "model.ckpt", tmp_path):
        with pytest.raises(ConversionError, match=r"index file 'model.ckpt.index' is missing"):
            open_checkpoint(src)


def test_missing_data_and_shards(ckpts, tmp_path):
    index = Path(str(ckpts["V2"]) + ".index")
    shutil.copy(index, tmp_path / index.name)
    with pytest.raises(ConversionError, match="no data file"):
        open_checkpoint(tmp_path / "model.ckpt")
    (tmp_path / "model.ckpt.data-00001-of-00002").write_bytes(b"")
    with pytest.raises(ConversionError, match="shard.*model.ckpt.data-00000-of-00002"):
        open_checkpoint(tmp_path / "model.ckpt")


def test_truncated_v2_data(ckpts, tmp_path):
    for f in v2_files(ckpts["V2"]):
        shutil.copy(f, tmp_path / f.name)
    data = tmp_path / "model.ckpt.data-00000-of-00001"
    with open(data, "r+b") as handle:
        handle.truncate(data.stat().st_size // 2)
    with pytest.raises(ConversionError, match=r"model.ckpt.data-00000-of-00001: the data file is truncated"):
        open_checkpoint(tmp_path / "model.ckpt")


def test_truncated_v1_file(ckpts, tmp_path):
    target = tmp_path / "net.ckpt"
    target.write_bytes(ckpts["V1"].read_bytes()[:-100])
    with pytest.raises(ConversionError, match=r"net.ckpt: TensorFlow cannot open this V1 checkpoint.*truncated"):
        open_checkpoint(target)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(ConversionError, match="no such checkpoint"):
        open_checkpoint(tmp_path / "nothing")
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(ConversionError, match="no TensorFlow checkpoint found"):
        open_checkpoint(tmp_path)


# ---------------------------------------------------------------------------------------------
# Archives
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".zip", ".bin"])
def test_archive_of_v2(ckpts, tmp_path, suffix):
    files = {f"mobilenet/{f.name}": f for f in v2_files(ckpts["V2"])}
    archive = tmp_path / f"model{suffix}"
    if suffix == ".zip":
        make_zip(archive, files)
    else:  # ".bin": a tar.gz recognised by content (cached files may be named by hash)
        make_tar(archive, files)
    with open_checkpoint(archive, workdir=tmp_path / "work") as ckpt:
        assert ckpt.format == "V2" and Path(ckpt.path).name == "model.ckpt"
        _check_contents(ckpt)
        extracted = Path(ckpt.path).parent.parent
        assert extracted.exists()
    assert not extracted.exists()  # the temporary folder goes on close


def test_archive_of_v1_with_inside_symlink(ckpts, tmp_path):
    archive = tmp_path / "vgg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(str(ckpts["V1"]), arcname="vgg/net.ckpt")
        link = tarfile.TarInfo("vgg/latest.ckpt")
        link.type, link.linkname = tarfile.SYMTYPE, "net.ckpt"
        tar.addfile(link)
    dest = extract_archive(archive, tmp_path / "out")
    copy = dest / "vgg" / "latest.ckpt"
    assert copy.is_file() and not copy.is_symlink()  # in-folder links become copies
    with open_checkpoint(archive, hint="net") as ckpt:
        _check_contents(ckpt)


def _tar_with(path, info, data=b""):
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(info, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize("name", ["../evil.ckpt", "a/../../evil.ckpt", "/tmp/evil.ckpt"])
def test_tar_member_escaping(tmp_path, name):
    info = tarfile.TarInfo(name)
    info.size = 3
    archive = _tar_with(tmp_path / "bad.tar.gz", info, b"bad")
    dest = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeArchive, match=f"member '{name}'.*(absolute path|'..')"):
        open_checkpoint(archive, workdir=dest)
    assert not (tmp_path / "evil.ckpt").exists() and not (tmp_path / "deep" / "evil.ckpt").exists()
    assert not any(dest.iterdir())  # the work folder is cleaned up


@pytest.mark.parametrize("target, hard", [("../../etc/passwd", False), ("/etc/passwd", False),
                                          ("../outside", True)])
def test_tar_link_escaping(tmp_path, target, hard):
    info = tarfile.TarInfo("ckpt/model.ckpt.index")
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    archive = _tar_with(tmp_path / "links.tgz", info)
    kind = "hard link" if hard else "symlink"
    with pytest.raises(UnsafeArchive, match=f"'ckpt/model.ckpt.index' is a {kind} to .*{target}"):
        extract_archive(archive, tmp_path / "out")


def test_tar_device_file(tmp_path):
    info = tarfile.TarInfo("dev/zero")
    info.type = tarfile.CHRTYPE
    archive = _tar_with(tmp_path / "dev.tar.gz", info)
    with pytest.raises(UnsafeArchive, match="'dev/zero' is a device"):
        extract_archive(archive, tmp_path / "out")


def test_zip_symlink_escape(tmp_path):
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("ckpt/model.ckpt.index")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../../etc/passwd")
    with pytest.raises(UnsafeArchive, match="symlink to '../../../etc/passwd', outside the folder"):
        extract_archive(archive, tmp_path / "out")


def test_zip_member_with_permission_bits_only_is_a_file(tmp_path):
    """Python's zipfile.writestr(name, data) records 0o600 with no file-type bits, as do some zip tools:
    such a member is a plain file, not a 'special file'."""
    archive = tmp_path / "plain.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ckpt/notes.txt", "fine")
    assert zipfile.ZipFile(archive).infolist()[0].external_attr >> 16 == 0o600
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out" / "ckpt" / "notes.txt").read_text() == "fine"


def test_zip_member_escaping(tmp_path):
    archive = tmp_path / "slip.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../../slip.txt", "zip slip")
    with pytest.raises(UnsafeArchive, match="'../../slip.txt' climbs out"):
        extract_archive(archive, tmp_path / "out")
    # checked before anything is written: not even the harmless member is there
    assert not (tmp_path / "out" / "ok.txt").exists() and not (tmp_path / "slip.txt").exists()


def _zeros(size):
    chunk = b"\0" * 2**20
    for _ in range(size // len(chunk)):
        yield chunk


def test_zip_bomb(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("model.ckpt.data-00000-of-00001", "w") as member:
            for chunk in _zeros(64 * 2**20):
                member.write(chunk)
    assert archive.stat().st_size < 2**20
    with pytest.raises(UnsafeArchive, match=r"'model.ckpt.data-00000-of-00001' expands the archive \d+x.*zip bomb"):
        open_checkpoint(archive, workdir=tmp_path / "work")
    assert not any((tmp_path / "work").iterdir())


def test_tar_bomb(tmp_path):
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("model.ckpt.data-00000-of-00001")
        info.size = 64 * 2**20

        class Zeros(io.RawIOBase):
            def readable(self):
                return True

            def readinto(self, buffer):
                buffer[:] = bytes(len(buffer))
                return len(buffer)

        tar.addfile(info, io.BufferedReader(Zeros()))
    with pytest.raises(UnsafeArchive, match="zip bomb"):
        extract_archive(archive, tmp_path / "out")
    out = tmp_path / "out"
    assert not list(out.rglob("*.data-*"))  # refused on its header, before any byte was written


def test_size_and_member_limits(ckpts, tmp_path):
    archive = make_tar(tmp_path / "ok.tar.gz", {f.name: f for f in v2_files(ckpts["V2"])})
    with pytest.raises(UnsafeArchive, match="past the limit of 1000 bytes.*KZOO_ARCHIVE_MAX_BYTES"):
        extract_archive(archive, tmp_path / "a", ArchiveLimits(max_total_bytes=1000))
    with pytest.raises(UnsafeArchive, match="more than 1 members"):
        extract_archive(archive, tmp_path / "b", ArchiveLimits(max_members=1))


def test_limits_from_environment(monkeypatch):
    monkeypatch.setenv("KZOO_ARCHIVE_MAX_BYTES", "123")
    monkeypatch.setenv("KZOO_ARCHIVE_MAX_RATIO", "7.5")
    limits = ArchiveLimits.from_env()
    assert limits.max_total_bytes == 123 and limits.max_ratio == 7.5


def test_damaged_archive(ckpts, tmp_path):
    archive = make_tar(tmp_path / "ok.tar.gz", {f.name: f for f in v2_files(ckpts["V2"])})
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ConversionError, match="cut.tar.gz: the archive is damaged or truncated"):
        open_checkpoint(cut, workdir=tmp_path / "work")
    assert not any((tmp_path / "work").iterdir())


def test_tensorflow_is_imported_lazily():
    import subprocess
    import sys

    code = ("import sys, kzoo.formats.tf_checkpoint, kzoo.convert, kzoo.convert._base;"
            "sys.exit('tensorflow' in sys.modules)")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


# ---------------------------------------------------------------------------------------------
# Damage the stdlib readers let through or report with their own exceptions (issue 15, found by fuzzing:
# tests/test_fuzz_readers.py)
# ---------------------------------------------------------------------------------------------


def _tar_bytes(files: dict) -> tuple[bytes, dict]:
    """An uncompressed tar of {name: Path} and each member's header offset."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, source in files.items():
            tar.add(str(source), arcname=name)
    data = buffer.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        offsets = {m.name: m.offset for m in tar.getmembers()}
    return data, offsets


def test_damaged_tar_header_is_not_taken_for_the_end(ckpts, tmp_path):
    """tarfile reads a damaged header after the first as the end of the archive, without an error, so the
    members after it vanish. A checkpoint followed by a README, whose header is damaged, loaded before."""
    readme = tmp_path / "README.txt"
    readme.write_text("notes\n" * 100)
    files = {f"model/{f.name}": f for f in v2_files(ckpts["V2"])} | {"model/README.txt": readme}
    data, offsets = _tar_bytes(files)
    damaged = bytearray(data)
    damaged[offsets["model/README.txt"] + 3] ^= 0x20  # a name byte: the header checksum no longer matches
    archive = tmp_path / "damaged.tar.gz"
    archive.write_bytes(gzip.compress(bytes(damaged)))
    with pytest.raises(ConversionError, match=rf"{archive}: the archive is damaged: a tar header cannot be read"):
        open_checkpoint(archive, workdir=tmp_path / "work")
    assert not any((tmp_path / "work").iterdir())
    archive.write_bytes(gzip.compress(data))  # the same archive undamaged opens
    with open_checkpoint(archive, workdir=tmp_path / "work") as ckpt:
        _check_contents(ckpt)


def test_gzip_checksum_is_checked(ckpts, tmp_path):
    """tarfile's stream reader never checks gzip's CRC-32; a gzip whose CRC does not match its data is damaged."""
    data, _ = _tar_bytes({f.name: f for f in v2_files(ckpts["V2"])})
    packed = bytearray(gzip.compress(data))
    packed[-8] ^= 0x01  # the trailer's CRC-32 (then the length)
    archive = tmp_path / "badcrc.tar.gz"
    archive.write_bytes(bytes(packed))
    with pytest.raises(ConversionError, match=rf"{archive}: the archive is damaged or truncated.*CRC"):
        open_checkpoint(archive, workdir=tmp_path / "work")


def _zip_fields(path) -> dict:
    data = path.read_bytes()
    local = data.index(b"PK\x03\x04")
    name_len, extra_len = int.from_bytes(data[local + 26:local + 28], "little"), int.from_bytes(
        data[local + 28:local + 30], "little")
    return {"central": data.index(b"PK\x01\x02"), "data": local + 30 + name_len + extra_len}


@pytest.mark.parametrize("damage", ["version", "deflate"])
def test_zip_damage_zipfile_reports_with_other_exceptions(ckpts, tmp_path, damage):
    """zipfile raises NotImplementedError for a damaged "version needed" field and zlib.error for a damaged
    deflate block; both must be the archive error."""
    archive = make_zip(tmp_path / "net.zip", {"net/net.ckpt": ckpts["V1"]})
    data = bytearray(archive.read_bytes())
    fields = _zip_fields(archive)
    if damage == "version":
        data[fields["central"] + 6:fields["central"] + 8] = (148).to_bytes(2, "little")  # "version 14.8"
    else:
        data[fields["data"]] = 0x07  # final block of the reserved type 3: "invalid block type"
    archive.write_bytes(bytes(data))
    with pytest.raises(ConversionError, match=rf"{archive}: the zip archive is damaged or truncated"):
        open_checkpoint(archive, workdir=tmp_path / "work")
    assert not any((tmp_path / "work").iterdir())


def test_errors_inside_an_archive_name_the_archive_not_the_temp_folder(ckpts, tmp_path):
    data_file = next(f for f in v2_files(ckpts["V2"]) if ".data-" in f.name)
    archive = make_tar(tmp_path / "noindex.tar.gz", {f"model/{data_file.name}": data_file})
    work = tmp_path / "work"
    with pytest.raises(ConversionError, match=rf"^{archive}: in the archive, model/model.ckpt.data-00000-of-00001: "
                                              r"the V2 checkpoint's index file 'model.ckpt.index' is missing") as info:
        open_checkpoint(archive, workdir=work)
    assert str(work) not in str(info.value)  # the extraction folder is gone when the user reads this
