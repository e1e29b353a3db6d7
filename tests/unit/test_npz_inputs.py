"""Every numpy file a command or a service reads goes through one checked reader
(agent.ops.files.load_npz): an empty, truncated or corrupt file, one that is not numpy's, or one
holding object arrays is one line naming the file and the fault, never a traceback and never
numpy's advice to allow pickles. Exit profiles check each field's type, and ``submit --timeout``
and ``profile --threads`` are bounded."""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest

from agent import cli
from agent.errors import UsageError
from agent.node.book import ReplaySet
from engines.npzfile import load_npz
from engines.exit_profile import ExitProfile, load_exit_profile, save_exit_profile
from engines.profile import load_dataset


def _npz_bytes(compressed: bool = False, **arrays) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def _corrupt_member() -> bytes:
    """A compressed archive whose member's deflate stream is damaged."""
    raw = bytearray(_npz_bytes(compressed=True, x=np.arange(4000, dtype=np.float64)))
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as z:
        info = z.infolist()[0]
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 4, start + 40):
        raw[i] ^= 0x5A
    return bytes(raw)


def _huge_header_npy() -> bytes:
    """A .npy whose header announces 256 TiB and holds nothing."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                               "shape": (2 ** 45,)})
    return buf.getvalue()


OK = dict(x=np.zeros((3, 2), np.float32), y=np.array([0, 1, 2]))
BROKEN = [
    ("empty", lambda: b"", "is empty"),
    ("truncated", lambda: _npz_bytes(**OK)[:150], "is truncated or corrupt"),
    ("zip magic then junk", lambda: b"PK\x03\x04" + bytes(range(256)) * 2,
     "is truncated or corrupt"),
    ("corrupt compressed member", _corrupt_member, "is truncated or corrupt"),
    ("random bytes", lambda: bytes(range(7, 256)) * 4, "is not an .npz"),
    ("text", lambda: b"hello, world\n", "is not an .npz"),
    ("object arrays", lambda: _npz_bytes(x=np.array([{"a": 1}], dtype=object)),
     "holds object arrays, which are refused"),
    ("a .npy named .npz", lambda: _npy(OK["x"]), "holds one array (.npy)"),
]


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _write(tmp_path, data: bytes, name: str = "f.npz") -> str:
    path = os.path.join(str(tmp_path), name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _assert_one_clear_line(text: str, path: str, fault: str) -> None:
    assert path in text and fault in text, text
    assert "allow_pickle" not in text and "Traceback" not in text and "\n" not in text.strip()


@pytest.mark.parametrize("case, make, fault", BROKEN, ids=[b[0] for b in BROKEN])
def test_load_npz_names_the_file_and_fault_of_a_broken_file(tmp_path, case, make, fault):
    path = _write(tmp_path, make())
    with pytest.raises(UsageError) as err:
        load_npz(path, "--what")
    _assert_one_clear_line(str(err.value), path, fault)
    assert str(err.value).startswith("--what: ")


def test_load_npz_refuses_a_npy_announcing_more_than_memory(tmp_path):
    path = _write(tmp_path, _huge_header_npy(), "huge.npy")
    with pytest.raises(UsageError) as err:
        load_npz(path, "--images", npy_as="x")
    _assert_one_clear_line(str(err.value), path, "is truncated or corrupt")


def test_load_npz_reads_every_array_and_a_npy_only_when_asked(tmp_path):
    got = load_npz(_write(tmp_path, _npz_bytes(compressed=True, **OK)), "w")
    assert sorted(got) == ["x", "y"] and np.array_equal(got["y"], OK["y"])
    got = load_npz(_write(tmp_path, _npy(OK["x"]), "x.npy"), "w", npy_as="x")
    assert list(got) == ["x"] and got["x"].shape == (3, 2)


@pytest.mark.parametrize("case, make, fault", BROKEN, ids=[b[0] for b in BROKEN])
def test_every_reader_of_a_broken_npz_gives_one_line_naming_the_file(tmp_path, case, make,
                                                                      fault):
    """The exit profile loader, a source's replay set and the --data of profile/heads."""
    path = _write(tmp_path, make())
    for read in (load_exit_profile, lambda p: ReplaySet(p, (1, 2), "float32"), load_dataset):
        with pytest.raises(UsageError) as err:
            read(path)
        _assert_one_clear_line(str(err.value), path, fault)


def _profile_arrays(**changes):
    arrays = dict(format_version=np.int64(2), num_stages=np.int64(2),
                  exit_stages=np.array([1, 2]), confidence=np.full((3, 2), 0.5),
                  correct=np.ones((3, 2), bool), synthetic=np.bool_(False), note=np.asarray("n"))
    arrays.update(changes)
    return arrays


@pytest.mark.parametrize("changes, fault", [
    (dict(format_version=np.array([2, 2])), "format_version must be a single value"),
    (dict(format_version=np.asarray("two")), "format_version must hold a whole number"),
    (dict(exit_stages=np.int64(2)), "exit_stages must be a list"),
    (dict(exit_stages=np.array([1.5, 2.0])), "exit_stages must hold whole numbers"),
    (dict(num_stages=np.float64(2.5), exit_stages=np.array([1, 2])),
     "num_stages must hold a whole number"),
    (dict(correct=np.full((3, 2), 5)), "correct must hold true/false (or 0/1) values"),
    (dict(synthetic=np.array([True, False])), "synthetic must be a single value"),
    (dict(confidence=np.full((3, 2), "a")), "confidence must hold numbers"),
    (dict(label=np.array([0.0, 2.5, 1.0])), "label must hold whole numbers"),
], ids=["version-array", "version-text", "stages-0d", "stages-2.5", "num-stages-2.5",
        "correct-5", "synthetic-array", "confidence-text", "label-2.5"])
def test_exit_profile_fields_a_cast_would_change_are_refused(tmp_path, changes, fault):
    path = _write(tmp_path, _npz_bytes(**_profile_arrays(**changes)))
    with pytest.raises(UsageError) as err:
        load_exit_profile(path)
    _assert_one_clear_line(str(err.value), path, fault)


def test_exit_profile_with_0_1_integer_correct_and_float_whole_stages_loads(tmp_path):
    path = _write(tmp_path, _npz_bytes(**_profile_arrays(
        correct=np.array([[1, 0], [0, 1], [1, 1]]), exit_stages=np.array([1.0, 2.0]))))
    p = load_exit_profile(path)
    assert p.exit_stages == (1, 2) and p.correct.dtype == bool and p.correct.sum() == 4
    out = os.path.join(str(tmp_path), "round.npz")
    save_exit_profile(out, p)
    assert isinstance(load_exit_profile(out), ExitProfile)


@pytest.mark.parametrize("timeout", ["inf", "1e300", "nan", "0", "86401"])
def test_submit_timeout_out_of_range_is_one_line_exit_2(tmp_path, capsys, timeout):
    path = _write(tmp_path, _npz_bytes(**OK))
    rc = cli.main(["submit", "--images", path, "--endpoint", "tcp://127.0.0.1:9",
                   "--timeout", timeout])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("edge-agent submit: error: --timeout:"), err
    assert "\n" not in err


@pytest.mark.parametrize("make", [lambda: b"", lambda: _npz_bytes(**OK)[:150], _corrupt_member,
                                  _huge_header_npy, lambda: b"\x00garbage" * 20],
                         ids=["empty", "truncated", "corrupt-member", "huge-header", "garbage"])
def test_submit_broken_images_is_one_line_exit_2(tmp_path, capsys, make):
    path = _write(tmp_path, make())
    rc = cli.main(["submit", "--images", path, "--endpoint", "tcp://127.0.0.1:9",
                   "--timeout", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("edge-agent submit: error: --images: "), err
    _assert_one_clear_line(err, path, "")


@pytest.mark.parametrize("command", ["profile", "heads"])
@pytest.mark.parametrize("threads", ["1099511627776", "0", "two"])
def test_threads_out_of_range_is_an_argparse_error(tmp_path, capsys, command, threads):
    args = {"profile": ["profile", "--bundle", str(tmp_path)],
            "heads": ["heads", "--onnx", "m.onnx", "--at", "t", "--out", "o.onnx"]}[command]
    with pytest.raises(SystemExit) as exc:
        cli.main(args + ["--data", "d.npz", "--threads", threads])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "argument --threads: must be" in err and "Traceback" not in err


@pytest.mark.parametrize("arrays, fault", [
    (dict(x=np.full((3, 2), "a"), y=np.array([0, 1, 2])), "x has dtype str"),
    (dict(x=np.float32(1.0), y=np.array([0])), "got a single value"),
    (dict(x=np.zeros((3, 2), np.float32), y=np.int64(1)), "got a single value"),
], ids=["x-text", "x-0d", "y-0d"])
def test_replay_set_refuses_arrays_it_cannot_send_in_one_line(tmp_path, arrays, fault):
    path = _write(tmp_path, _npz_bytes(**arrays))
    with pytest.raises(UsageError) as err:
        ReplaySet(path, (1, 2), "float32")
    _assert_one_clear_line(str(err.value), path, fault)


@pytest.mark.parametrize("make", [lambda: b"", lambda: _npz_bytes(a0=np.zeros(3))[:100],
                                  _corrupt_member], ids=["empty", "truncated", "corrupt"])
def test_a_damaged_heads_feature_cache_is_a_miss_not_a_crash(tmp_path, make):
    from engines.heads import _read_cache

    assert _read_cache(_write(tmp_path, make()), [(3,)]) is None


def test_a_dataset_without_samples_is_refused_as_such(tmp_path):
    """Rule: `profile`/`heads --data` with zero rows says there are no samples (it said y
    must match x's 0 rows, which it did)."""
    import numpy as np

    path = str(tmp_path / "empty.npz")
    np.savez(path, x=np.zeros((0, 1, 28, 28), np.float32), y=np.zeros((0,), np.int64))
    with pytest.raises(UsageError, match=r"x holds no samples \(0 rows\)"):
        load_dataset(path)


def test_a_uint8_replay_set_is_scaled_for_a_float_model_as_profile_reads_it(tmp_path):
    """Rule: a source's replay set of uint8 images feeds a float32 stage 1 with x / 255, as
    `heads` and `profile` read the same file (a plain cast had sent 0-255 to a model trained
    on [0, 1]: the testbed's accuracy fell from 0.82 to 0.68 without a word); a uint8 stage 1
    gets the bytes."""
    from engines.profile import as_input
    path = str(tmp_path / "u8.npz")
    x = np.array([[[0, 51]], [[255, 102]]], np.uint8)
    np.savez(path, x=x, y=np.array([0, 1]))
    got = ReplaySet(path, (1, 1, 2), "float32").x
    assert got.dtype == np.float32 and np.allclose(got, x / 255.0)
    assert np.array_equal(got, as_input(x, "float32"))
    assert np.array_equal(ReplaySet(path, (1, 1, 2), "uint8").x, x)
