"""Labels from UTKFace names and CSV files; conditions."""

import numpy as np
import pytest

from lrgmm.data.labels import (
    LabelError,
    LabelTable,
    age_group,
    parse_conditions,
    read_label_csv,
    utkface_labels,
)


def test_utkface_names_parse_and_malformed_names_are_unlabeled():
    assert utkface_labels("26_1_2_20170116174525125.jpg.chip.jpg") == {
        "gender": "female", "age": "adult", "race": "asian", "age_years": "26"}
    assert utkface_labels("/x/y/70_0_4_2017.jpg")["age"] == "senior"
    for bad in ["39_1_20170116174525125.jpg.chip.jpg", "a_b_c_d.jpg", "5_2_0_x.jpg", "5_0_9_x.jpg", "face.png"]:
        assert utkface_labels(bad) == {}
    assert [age_group(a) for a in (0, 17, 18, 59, 60, 116)] == ["child", "child", "adult", "adult", "senior", "senior"]


def test_table_from_shared_names_counts_and_masks(utkface_dir):
    files = sorted(str(p) for p in (utkface_dir / "images").iterdir())[:500]
    table = LabelTable.from_files(files)
    genders = table.column("gender")
    counts = table.counts("gender")
    assert sum(counts.values()) == sum(g is not None for g in genders) > 450
    mask = table.mask({"gender": "female", "age": "senior"})
    for f, m in zip(files, mask):
        lab = utkface_labels(f)
        assert m == (lab.get("gender") == "female" and lab.get("age") == "senior")
    with pytest.raises(LabelError, match="unknown attribute 'smile'"):
        table.column("smile")


def test_csv_labels(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("file,smile,glasses\nsub/a.jpg,yes,0\nb.jpg,no,\n")
    assert read_label_csv(p) == {"a.jpg": {"smile": "yes", "glasses": "0"}, "b.jpg": {"smile": "no"}}
    table = LabelTable.from_files(["/d/a.jpg", "/d/b.jpg", "/d/c.jpg"], csv_path=p)
    assert table.column("smile") == ["yes", "no", None]
    assert table.column("glasses") == ["0", None, None]
    assert np.array_equal(table.mask({"smile": "no"}), [False, True, False])
    with pytest.raises(LabelError, match="no training image has smile=maybe"):
        table.mask({"smile": "maybe"})


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is empty"),
        ("name,smile\na.jpg,1\n", "no 'file' column"),
        ("file\na.jpg\n", "named attribute"),
        ("file,smile\na.jpg,1,2\n", "line 2: 3 fields"),
        ("file,smile\na.jpg,1\na.jpg,0\n", "listed twice"),
        ("file,smile\n", "no rows"),
    ],
)
def test_malformed_csv_errors_name_the_file(tmp_path, text, message):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(LabelError, match=message) as e:
        read_label_csv(p)
    assert "bad.csv" in str(e.value)


def test_csv_matching_no_image_is_an_error(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("file,smile\nz.jpg,1\n")
    with pytest.raises(LabelError, match="none of the 2 images"):
        LabelTable.from_files(["a.jpg", "b.jpg"], csv_path=p)


def test_parse_conditions():
    assert parse_conditions(["gender=1", "age=senior"]) == {"gender": "female", "age": "senior"}
    assert parse_conditions(["race=Asian", "smile=yes"]) == {"race": "asian", "smile": "yes"}
    assert parse_conditions({"gender": 0}) == {"gender": "male"}
    with pytest.raises(LabelError, match="not ATTRIBUTE=VALUE"):
        parse_conditions(["gender"])
    with pytest.raises(LabelError, match="unknown gender value '7'"):
        parse_conditions(["gender=7"])
    with pytest.raises(LabelError, match="conflicting"):
        parse_conditions(["gender=0", "gender=female"])
