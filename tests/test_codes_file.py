"""The ``.npz`` token files: ragged rows (codes padded + lengths) round-trip; fixed-length files, old and new, load;
malformed ones are refused by name."""

from __future__ import annotations

import numpy as np
import pytest

import titok
from titok.data.codes_file import PAD, load_codes, save_codes


def test_ragged_rows_round_trip(tmp_path):
    codes = np.arange(12).reshape(3, 4)
    lengths = np.array([2, 4, 1])
    written = save_codes(tmp_path / "c.npz", codes, lengths=lengths, files=["a.png", "b.png", "c.png"], model="m")
    back = titok.load_codes(tmp_path / "c.npz")
    assert back.kind == "codes" and back.model == "m" and back.files == ["a.png", "b.png", "c.png"]
    assert back.values.dtype == np.int64 and back.lengths.tolist() == [2, 4, 1]
    assert [r.tolist() for r in back.rows()] == [[0, 1], [4, 5, 6, 7], [8]]
    assert back.values[0, 2:].tolist() == [PAD, PAD] and back.values[2, 1:].tolist() == [PAD] * 3
    assert np.array_equal(written.values, back.values)
    with np.load(tmp_path / "c.npz") as data:  # what other programs see
        assert sorted(data.files) == ["codes", "files", "lengths", "model"]


def test_fixed_length_files_load_as_before(tmp_path):
    np.savez(tmp_path / "old.npz", codes=np.ones((2, 4), np.uint16), files=np.array(["x", "y"]), model=np.array("m"))
    old = load_codes(tmp_path / "old.npz")
    assert old.lengths is None and old.row_lengths().tolist() == [4, 4] and old.values.dtype == np.int64
    np.savez(tmp_path / "bare.npz", codes=np.zeros((1, 3), np.int32))
    assert load_codes(tmp_path / "bare.npz").files == [] and load_codes(tmp_path / "bare.npz").model is None
    save_codes(tmp_path / "lat.npz", np.zeros((2, 3, 5), np.float64), lengths=[1, 3])
    latents = load_codes(tmp_path / "lat.npz")
    assert latents.kind == "latents" and latents.values.dtype == np.float32
    assert [len(r) for r in latents.rows()] == [1, 3]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"codes": np.zeros((2, 4)), "lengths": np.array([1, 5])}, "'codes' are float64, but codes are integers"),
        ({"codes": np.zeros((2, 4), int), "lengths": np.array([1, 5])}, r"a row length of 5; lengths .* \[1, 4\]"),
        ({"codes": np.zeros((2, 4), int), "lengths": np.array([0, 2])}, "a row length of 0"),
        ({"codes": np.zeros((2, 4), int), "lengths": np.array([1])}, r"'lengths' must be one per row \(2\)"),
        ({"codes": np.zeros((2, 4), int), "lengths": np.array([1.0, 2.0])}, "'lengths' are float64; expected integers"),
        ({"codes": np.array([[3, -1], [-1, 2]]), "lengths": np.array([1, 2])}, "code -1 is out of range"),
        ({"codes": np.zeros((2, 0), int)}, r"holds codes \(2, 0\); expected \(B, K\), K >= 1"),
        ({"latents": np.zeros((2, 4))}, r"holds latents \(2, 4\); expected \(B, K, D\)"),
        ({"tokens": np.zeros((2, 4))}, "holds neither 'codes' nor 'latents'"),
    ],
)
def test_malformed_files_are_named(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message) as e:
        load_codes(path)
    assert str(path) in str(e.value)


def test_padding_is_ignored_but_kept_codes_are_checked(tmp_path):
    np.savez(tmp_path / "ok.npz", codes=np.array([[3, -1], [1, 2]]), lengths=np.array([1, 2]))
    assert [r.tolist() for r in load_codes(tmp_path / "ok.npz").rows()] == [[3], [1, 2]]
    with pytest.raises(ValueError, match=r"a row length of 3; lengths must lie in \[1, 2\]"):
        save_codes(tmp_path / "x.npz", np.zeros((1, 2), int), lengths=[3])
    assert not (tmp_path / "x.npz").exists()
