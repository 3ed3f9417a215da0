"""Dataset loaders: what they return, in which order, and what they say when a file is missing."""

import io
import tarfile

import pytest

from influencekit.errors import InputError
from influencekit.experiments import datasets


def _tar(path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():  # archive order = insertion order, deliberately not sorted
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_enron_reads_ham_and_spam_emails_in_file_name_order_with_spam_labelled_1(tmp_path):
    _tar(tmp_path / "enron1.tar.gz", {
        "enron1/spam/0002.txt": b"Subject: win money",
        "enron1/ham/0003.txt": b"Subject: meeting \xe9t\xe9",  # Latin-1 bytes
        "enron1/Summary.txt": b"not an email",
        "enron1/ham/0001.txt": b"Subject: lunch",
    })
    docs, labels = datasets.enron(tmp_path)
    assert docs == ["Subject: lunch", "Subject: meeting \u00e9t\u00e9", "Subject: win money"]
    assert labels.tolist() == [0, 0, 1]


def test_a_missing_data_file_names_the_folder_option(tmp_path):
    with pytest.raises(InputError, match="--data-dir"):
        datasets.enron(tmp_path)


def test_a_data_folder_the_user_names_is_used_or_refused_never_replaced(tmp_path, monkeypatch):
    assert datasets.data_dir(tmp_path) == tmp_path.resolve()
    with pytest.raises(InputError, match="--data-dir"):
        datasets.data_dir(tmp_path / "missing")
    monkeypatch.setenv("INFLUENCEKIT_DATA", str(tmp_path / "missing"))
    with pytest.raises(InputError, match="INFLUENCEKIT_DATA"):
        datasets.data_dir()
    monkeypatch.setenv("INFLUENCEKIT_DATA", str(tmp_path))
    assert datasets.data_dir() == tmp_path.resolve()


def test_without_a_named_folder_data_is_found_only_in_shared_data_beside_the_working_directory(tmp_path,
                                                                                             monkeypatch):
    monkeypatch.delenv("INFLUENCEKIT_DATA", raising=False)
    work = tmp_path / "checkout"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(InputError, match="--data-dir DIR or set INFLUENCEKIT_DATA") as e:
        datasets.data_dir()
    assert str(tmp_path / "shared" / "data") in str(e.value)  # it says where it looked
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert datasets.data_dir() == (tmp_path / "shared" / "data").resolve()
