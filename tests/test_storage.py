"""storage: records round-trip bit for bit, and anything else is refused with CacheError."""

from __future__ import annotations

import json

import pytest
import torch

from influencekit import fingerprint, storage
from influencekit.convention import SIGN_CONVENTION
from influencekit.errors import CacheError
from influencekit.experiments.models import MLP
from influencekit.objective import Objective


@pytest.fixture
def record(tmp_path):
    tensors = {"s_test": torch.randn(3, 7, dtype=torch.float64), "idx": torch.arange(5)}
    meta = {"solver": {"solver": "cg", "tol": 1e-8}, "model": "abc", "data": "def"}
    storage.save(tmp_path / "r", tensors, meta)
    return tmp_path / "r", tensors, meta


def test_round_trip_is_exact_and_records_shapes_dtype_sign_and_checksum(record):
    path, tensors, meta = record
    loaded, found = storage.load(path, meta)
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v)
    assert found == meta
    rec = json.loads(path.with_suffix(".json").read_text())
    assert rec["tensors"]["s_test"] == {"shape": [3, 7], "dtype": "torch.float64"}
    assert rec["sign_convention"] == SIGN_CONVENTION
    assert rec["sha256"] == fingerprint.sha256(path.with_suffix(".safetensors").read_bytes())


def test_one_flipped_byte_is_detected(record):
    path, _, meta = record
    f = path.with_suffix(".safetensors")
    data = bytearray(f.read_bytes())
    data[-3] ^= 0x01  # inside the tensor payload: still a valid safetensors file
    f.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="SHA-256"):
        storage.load(path, meta)


def test_truncated_tensor_file_is_detected(record):
    path, _, meta = record
    f = path.with_suffix(".safetensors")
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(CacheError, match="truncated"):
        storage.load(path, meta)


def test_truncated_json_is_detected(record):
    path, _, meta = record
    j = path.with_suffix(".json")
    j.write_text(j.read_text()[:40])
    with pytest.raises(CacheError, match="not valid JSON"):
        storage.load(path, meta)


def test_other_settings_model_or_data_are_refused_by_name(record):
    path, _, meta = record
    with pytest.raises(CacheError, match="other settings.*'solver'"):
        storage.load(path, {**meta, "solver": {"solver": "cg", "tol": 1e-6}})
    with pytest.raises(CacheError, match="another model"):
        storage.load(path, {**meta, "model": "xyz"})
    with pytest.raises(CacheError, match="other data"):
        storage.load(path, {**meta, "data": "xyz"})


def test_killed_write_leaves_no_record_and_its_temporary_is_cleaned(tmp_path):
    # what a SIGKILL between write and rename leaves: a temp file, no record
    (tmp_path / ".chunk_00000.safetensors.abc.tmp").write_bytes(b"partial")
    assert not storage.exists(tmp_path / "chunk_00000")
    assert storage.remove_stale_temporaries(tmp_path) == 1
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_whole_file(tmp_path):
    f = tmp_path / "a.bin"
    storage.atomic_write(f, b"old contents")
    storage.atomic_write(f, b"new")
    assert f.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_model_fingerprint_changes_with_any_weight_and_with_architecture():
    torch.manual_seed(0)
    a = MLP(4, (3,), 2).double().eval()
    b = MLP(4, (3,), 2).double().eval()
    b.load_state_dict(a.state_dict())
    assert fingerprint.fingerprint_model(a) == fingerprint.fingerprint_model(b)
    with torch.no_grad():
        b.head.bias[1] += 1e-12
    assert fingerprint.fingerprint_model(a) != fingerprint.fingerprint_model(b)
    c = MLP(4, (3,), 2).double().eval()
    c.load_state_dict(a.state_dict())
    c.features[2] = torch.nn.Sigmoid()  # same weights, other architecture
    assert fingerprint.fingerprint_model(a) != fingerprint.fingerprint_model(c)


def test_objective_fingerprint_depends_on_l2_and_scope():
    torch.manual_seed(0)
    model = MLP(4, (3,), 2).double().eval()
    data = (torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 2, (10,)))
    base = fingerprint.fingerprint_objective(Objective(model, "cross_entropy", data, l2=0.1))
    assert base == fingerprint.fingerprint_objective(Objective(model, "cross_entropy", data, l2=0.1))
    assert base != fingerprint.fingerprint_objective(Objective(model, "cross_entropy", data, l2=0.2))
    assert base != fingerprint.fingerprint_objective(
        Objective(model, "cross_entropy", data, l2=0.1, params=["head.weight", "head.bias"]))


def test_data_fingerprint_full_for_tensors_sampled_for_datasets():
    X, y = torch.randn(100, 3), torch.randint(0, 2, (100,))
    fp = fingerprint.fingerprint_data((X, y))
    X2 = X.clone()
    X2[50, 1] += 1e-6
    assert fingerprint.fingerprint_data((X2, y)) != fp  # any row of in-memory tensors counts
    y2 = y.clone()
    y2[7] = 1 - y2[7]
    assert fingerprint.fingerprint_data((X, y2)) != fp
    ds, ds2 = torch.utils.data.TensorDataset(X, y), torch.utils.data.TensorDataset(X2, y)
    # a Dataset is hashed on sampled rows: rows 0 and 99 are always in, row 50 only in full mode
    assert fingerprint.fingerprint_data(ds, sample=2) == fingerprint.fingerprint_data(ds2, sample=2)
    assert fingerprint.fingerprint_data(ds, sample=None) != fingerprint.fingerprint_data(ds2, sample=None)
    X3 = X.clone()
    X3[99, 0] += 1.0
    assert fingerprint.fingerprint_data(ds, sample=2) != fingerprint.fingerprint_data(
        torch.utils.data.TensorDataset(X3, y), sample=2)
