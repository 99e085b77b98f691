"""Tests for speakerdemo.gallery: enrolment, ranking, the file format and its refusals."""

import json
import os
import pickle

import numpy as np
import pytest
import safetensors.numpy

from speakerdemo.gallery import Gallery, GalleryError, Match, Ranking

E1, E2, E3 = np.eye(3)


@pytest.fixture
def gallery() -> Gallery:
    """alice ~ e1 (two clips), bob = e2, carol = e3."""
    g = Gallery()
    g.enroll("alice", [np.array([2.0, 0.0, 0.0]), np.array([1.0, 1.0, 0.0])])
    g.enroll("bob", [np.array([0.0, 3.0, 0.0])])
    g.enroll("carol", [E3])
    return g


def test_enroll_normalises_and_counts(gallery):
    assert gallery.names() == ["alice", "bob", "carol"]
    assert len(gallery) == 3 and gallery.dim == 3
    assert gallery.clip_counts() == {"alice": 2, "bob": 1, "carol": 1}
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(gallery.clips("alice"), [[1, 0, 0], [s, s, 0]], rtol=1e-6)
    assert gallery.clips("alice").dtype == np.float32


def test_enroll_appends_to_existing_speaker_and_strips_name(gallery):
    gallery.enroll("  bob ", [np.array([0.0, 0.0, -4.0])])
    assert gallery.names() == ["alice", "bob", "carol"]
    np.testing.assert_allclose(gallery.clips("bob"), [[0, 1, 0], [0, 0, -1]])
    assert " bob" in gallery and "dave" not in gallery


def test_centroid_is_normalised_mean(gallery):
    # alice clips e1 and (e1+e2)/sqrt2: mean = ((1+s)/2, s/2, 0), s = 1/sqrt2
    # norm = sqrt((1+s)^2 + s^2)/2 = sqrt(2 + sqrt2)/2
    s = 1 / np.sqrt(2)
    mean = np.array([(1 + s) / 2, s / 2, 0.0])
    expected = mean / np.linalg.norm(mean)
    np.testing.assert_allclose(gallery.centroid("alice"), expected, rtol=1e-6)
    np.testing.assert_allclose(expected, [0.92388, 0.38268, 0.0], atol=1e-5)
    assert np.linalg.norm(gallery.centroid("alice")) == pytest.approx(1.0)


def test_rank_orders_by_cosine(gallery):
    # query (1, 1, 0)/sqrt2 against centroids:
    #   alice (0.92388, 0.38268, 0) -> (0.92388+0.38268)/sqrt2 = 0.92388
    #   bob   e2                    -> 1/sqrt2 = 0.70711
    #   carol e3                    -> 0
    ranking = gallery.rank(np.array([1.0, 1.0, 0.0]), top_k=5, threshold=0.8)
    assert [m.name for m in ranking.matches] == ["alice", "bob", "carol"]
    np.testing.assert_allclose([m.score for m in ranking.matches], [0.92388, 0.70711, 0.0], atol=1e-5)
    assert ranking.best == "alice"
    assert ranking.threshold == 0.8


def test_rank_uses_the_given_scoring(gallery):
    """The app's scoring (a cohort's normalisation, a shift for the query's kind of clip) replaces
    the cosine: here the cosine less 0.2 and, for bob only, a bonus that reorders the ranking.
    The scorer sees the unit query and the unit centroids in enrolment order."""
    query = np.array([1.0, 1.0, 0.0])
    seen = {}

    def score(q: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        seen["q"], seen["c"] = q, centroids
        return centroids @ q - 0.2 + np.array([0.0, 0.3, 0.0])

    plain = gallery.rank(query, top_k=3, threshold=0.8)
    scored = gallery.rank(query, top_k=3, threshold=0.8, score=score)
    np.testing.assert_allclose(seen["q"], query / np.sqrt(2))
    np.testing.assert_allclose(np.linalg.norm(seen["c"], axis=1), 1.0)
    assert [m.name for m in scored.matches] == ["bob", "alice", "carol"]
    np.testing.assert_allclose([m.score for m in scored.matches], [0.80711, 0.72388, -0.2], atol=1e-5)
    assert plain.best == "alice" and scored.best == "bob"


def test_rank_top_k_and_unknown_below_threshold(gallery):
    ranking = gallery.rank(np.array([0.0, 1.0, 1.0]), top_k=2, threshold=0.75)
    # bob and carol both score 1/sqrt2 = 0.7071 < 0.75; ties keep enrolment order
    assert [m.name for m in ranking.matches] == ["bob", "carol"]
    assert ranking.best == "unknown"


def test_rank_empty_gallery_is_unknown():
    ranking = Gallery(dim=3).rank(E1)
    assert ranking.matches == [] and ranking.best == "unknown"


def test_ranking_best_uses_threshold_inclusively():
    assert Ranking([Match("a", 0.5)], threshold=0.5).best == "a"
    assert Ranking([Match("a", 0.49)], threshold=0.5).best == "unknown"


@pytest.mark.parametrize(
    ("name", "vectors", "message"),
    [
        ("   ", [E1], "empty"),
        ("x" * 65, [E1], "limit is 64"),
        ("Unknown", [E1], "reserved"),
        ("dave", [np.ones(4)], "dimension 4"),
        ("dave", [np.array([1.0, np.nan, 0.0])], "NaN"),
        ("dave", [np.zeros(3)], "zero vector"),
        ("dave", [], "non-empty"),
        ("dave", E1, "1-D vectors"),
        ("dave", [E1, np.ones(2)], "equal-length"),
    ],
)
def test_enroll_rejects_bad_input_and_changes_nothing(gallery, name, vectors, message):
    before = gallery.to_bytes()
    with pytest.raises(ValueError, match=message):
        gallery.enroll(name, vectors)
    assert gallery.to_bytes() == before


def test_name_of_64_chars_is_accepted():
    g = Gallery()
    g.enroll("x" * 64, [E1])
    assert g.names() == ["x" * 64]


def test_dim_fixed_by_first_enrolment_or_constructor():
    g = Gallery()
    assert g.dim is None
    g.enroll("a", [np.ones(5)])
    assert g.dim == 5
    with pytest.raises(ValueError, match="5-D"):
        Gallery(dim=5).enroll("a", [np.ones(3)])


def test_remove(gallery):
    gallery.remove(" alice ")
    assert gallery.names() == ["bob", "carol"]
    np.testing.assert_array_equal(gallery.clips("bob"), [[0, 1, 0]])
    with pytest.raises(ValueError, match="No enrolled speaker named 'alice'."):
        gallery.remove("alice")
    with pytest.raises(ValueError, match="No enrolled speaker named 'alice'."):
        gallery.centroid("alice")


def test_copy_is_independent(gallery):
    clone = gallery.copy()
    clone.enroll("alice", [E3])
    clone.remove("bob")
    clone.enroll("dave", [E1])
    assert gallery.names() == ["alice", "bob", "carol"]
    assert gallery.clip_counts()["alice"] == 2
    assert clone.names() == ["alice", "carol", "dave"]


def test_clips_returns_a_copy(gallery):
    gallery.clips("bob")[0, 0] = 99.0
    np.testing.assert_array_equal(gallery.clips("bob"), [[0, 1, 0]])


def assert_same(a: Gallery, b: Gallery) -> None:
    assert a.names() == b.names() and a.dim == b.dim
    for name in a.names():
        clips_a, clips_b = a.clips(name), b.clips(name)
        assert clips_a.dtype == clips_b.dtype == np.float32
        assert clips_a.tobytes() == clips_b.tobytes()  # bit-exact


def test_save_load_round_trip_is_bit_exact(tmp_path, gallery):
    rng = np.random.default_rng(0)
    gallery.enroll("dave", list(rng.normal(size=(4, 3))))
    path = tmp_path / "gallery.safetensors"
    gallery.save(path)
    loaded = Gallery.load(path)
    assert_same(gallery, loaded)
    assert loaded.to_bytes() == gallery.to_bytes()
    assert os.listdir(tmp_path) == ["gallery.safetensors"]  # no temp file left


def test_empty_gallery_round_trips():
    for g in (Gallery(), Gallery(dim=4)):
        loaded = Gallery.from_bytes(g.to_bytes())
        assert len(loaded) == 0 and loaded.dim == g.dim


def test_file_layout_matches_the_documented_format(gallery):
    data = gallery.to_bytes()
    clips = safetensors.numpy.load(data)["clips"]
    assert clips.shape == (4, 3) and clips.dtype == np.float32
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    meta = json.loads(header["__metadata__"]["speakerdemo_gallery"])
    assert meta == {
        "version": 1,
        "dim": 3,
        "speakers": [{"name": "alice", "clips": 2}, {"name": "bob", "clips": 1}, {"name": "carol", "clips": 1}],
    }


def test_save_is_atomic_when_replace_fails(tmp_path, gallery, monkeypatch):
    path = tmp_path / "gallery.safetensors"
    gallery.save(path)
    old_bytes = path.read_bytes()
    changed = gallery.copy()
    changed.enroll("dave", [E1])

    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        changed.save(path)
    assert path.read_bytes() == old_bytes
    assert Gallery.load(path).names() == ["alice", "bob", "carol"]
    assert os.listdir(tmp_path) == ["gallery.safetensors"]  # temp file cleaned up


def test_save_fsyncs_before_replace(tmp_path, gallery, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b)))
    gallery.save(tmp_path / "g.safetensors")
    # The file's data is durable before the rename; the directory entry after it.
    assert calls == ["fsync", "replace", "fsync"]


def _file(clips: np.ndarray, meta: object | None, extra: dict | None = None) -> bytes:
    """Hand-built gallery bytes, to test refusals of files this module would never write."""
    metadata = None if meta is None else {"speakerdemo_gallery": meta if isinstance(meta, str) else json.dumps(meta)}
    return safetensors.numpy.save({"clips": clips, **(extra or {})}, metadata=metadata)


UNIT = np.eye(2, dtype=np.float32)
GOOD_META = {"version": 1, "dim": 2, "speakers": [{"name": "a", "clips": 1}, {"name": "b", "clips": 1}]}


def test_hand_built_good_file_loads():
    g = Gallery.from_bytes(_file(UNIT, GOOD_META))
    assert g.names() == ["a", "b"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (pickle.dumps({"clips": [[1.0, 0.0]], "speakers": ["a"]}), "Not a valid safetensors"),
        (_file(UNIT, GOOD_META)[:-3], "Not a valid safetensors"),
        (b"", "Not a valid safetensors"),
        (_file(UNIT, None), "no 'speakerdemo_gallery' metadata"),
        (_file(UNIT, "{not json"), "not valid JSON"),
        (_file(UNIT, {**GOOD_META, "version": 2}), "version 2"),
        (_file(UNIT, {**GOOD_META, "version": True}), "version True"),
        (_file(UNIT, [1, 2]), "JSON object"),
        (_file(UNIT, {**GOOD_META, "speakers": [{"name": "a", "clips": 1}]}), "1 clips in total, but the tensor has 2"),
        (_file(UNIT, {**GOOD_META, "speakers": [{"name": "a", "clips": 3}]}), "3 clips in total"),
        (_file(UNIT, {**GOOD_META, "dim": 3}), "dimension 2, but the metadata says 3"),
        (_file(UNIT, {**GOOD_META, "dim": "2"}), "invalid dim"),
        (_file(np.array([[1.0, np.nan], [0.0, 1.0]], np.float32), GOOD_META), "NaN"),
        (_file(np.array([[3.0, 0.0], [0.0, 1.0]], np.float32), GOOD_META), "not unit-length"),
        (_file(np.array([1.0, 0.0], np.float32), GOOD_META), "must be 2-D"),
        (_file(UNIT.astype(np.float64), GOOD_META), "must be float32"),
        (_file(UNIT, {**GOOD_META, "speakers": [{"name": "a", "clips": 1}] * 2}), "duplicate speaker names"),
        (
            _file(UNIT, {**GOOD_META, "speakers": [{"name": "a", "clips": 2}, {"name": "", "clips": 0}]}),
            "positive clip",
        ),
        (
            _file(UNIT, {**GOOD_META, "speakers": [{"name": "a", "clips": 1}, {"name": " ", "clips": 1}]}),
            "invalid name",
        ),
        (_file(UNIT, {**GOOD_META, "speakers": [{"name": "a", "clips": 1}, {"name": "b ", "clips": 1}]}), "whitespace"),
        (_file(UNIT, {**GOOD_META, "speakers": "a,b"}), "must be a list"),
        (_file(UNIT, GOOD_META, {"other": UNIT}), "exactly one tensor"),
    ],
)
def test_from_bytes_refuses_untrustworthy_data(data, message):
    with pytest.raises(GalleryError, match=message):
        Gallery.from_bytes(data)


UNPICKLED: list[bool] = []


def _mark_unpickled() -> dict:
    UNPICKLED.append(True)
    return {}


class PickleTrap:
    """Unpickling this object records it in UNPICKLED."""

    def __reduce__(self):
        return (_mark_unpickled, ())


def test_pickle_is_never_unpickled(tmp_path):
    payload = pickle.dumps({"clips": PickleTrap()})
    pickle.loads(payload)  # the trap works: unpickling is detected
    assert UNPICKLED == [True]
    UNPICKLED.clear()
    path = tmp_path / "evil.safetensors"
    path.write_bytes(payload)
    with pytest.raises(GalleryError, match="Not a valid safetensors"):
        Gallery.load(path)
    assert UNPICKLED == []


def test_load_refuses_oversized_file_before_parsing(tmp_path, gallery):
    path = tmp_path / "g.safetensors"
    gallery.save(path)
    size = path.stat().st_size
    with pytest.raises(GalleryError, match=f"{size} bytes; the limit is {size - 1}"):
        Gallery.load(path, max_bytes=size - 1)
    assert Gallery.load(path, max_bytes=size).names() == gallery.names()


def test_load_missing_file_is_a_gallery_error(tmp_path):
    with pytest.raises(GalleryError, match="Cannot read gallery file"):
        Gallery.load(tmp_path / "absent.safetensors")


def test_gallery_error_is_a_value_error():
    assert issubclass(GalleryError, ValueError)
