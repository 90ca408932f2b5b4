"""Attribute labels of face photos, for editing and attribute-conditional sampling.

Two sources:

- UTKFace file names ``[age]_[gender]_[race]_[date&time].jpg.chip.jpg`` give ``gender``
  (male / female), ``age`` (three groups, below) and ``race`` (white / black / asian / indian /
  other). Names with a missing or non-numeric field are unlabeled, never an error.
- A CSV file with a ``file`` column and one column per attribute (any names, any values) labels
  any other data set. ``file`` is matched against the image's file name (not its folder); an empty
  cell means unlabeled.

Every label is a string (a category name). ``parse_conditions`` turns ``gender=1 age=senior``
into canonical category names, accepting UTKFace's integer codes as well.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LabelError


# Age groups (years, inclusive lower bounds). Child: under 18, adult: 18-59, senior: 60 and over.
AGE_GROUPS: tuple[tuple[str, int], ...] = (("child", 0), ("adult", 18), ("senior", 60))
GENDERS: tuple[str, ...] = ("male", "female")  # UTKFace code 0, 1
RACES: tuple[str, ...] = ("white", "black", "asian", "indian", "other")  # UTKFace code 0..4

UTKFACE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "gender": GENDERS,
    "age": tuple(name for name, _ in AGE_GROUPS),
    "race": RACES,
}

# Accepted spellings of each UTKFace category (besides the canonical name).
_ALIASES: dict[str, dict[str, str]] = {
    "gender": {"0": "male", "1": "female", "m": "male", "f": "female", "man": "male", "woman": "female"},
    "race": {str(i): r for i, r in enumerate(RACES)} | {"others": "other"},
    "age": {str(i): name for i, (name, _) in enumerate(AGE_GROUPS)} | {"young": "child", "old": "senior"},
}


def age_group(age: int) -> str:
    """The age group of an age in years (see ``AGE_GROUPS``)."""
    group = AGE_GROUPS[0][0]
    for name, lower in AGE_GROUPS:
        if age >= lower:
            group = name
    return group


def utkface_labels(path: str | Path) -> dict[str, str]:
    """Labels from a UTKFace file name; an empty dict when the name is malformed."""
    fields = Path(path).name.split("_")
    if len(fields) < 4:
        return {}
    try:
        age, gender, race = int(fields[0]), int(fields[1]), int(fields[2])
    except ValueError:
        return {}
    if not (0 <= age <= 130 and gender in (0, 1) and 0 <= race < len(RACES)):
        return {}
    return {"gender": GENDERS[gender], "age": age_group(age), "race": RACES[race], "age_years": str(age)}


@dataclass
class LabelTable:
    """Labels of a list of images: ``values[attribute][i]`` is the label of image ``i`` or ``None``.

    Build one with ``LabelTable.from_files(files, csv_path=None)``.
    """

    files: list[str]
    values: dict[str, list[str | None]]
    source: str

    @classmethod
    def from_files(cls, files: list[str], csv_path: str | Path | None = None) -> LabelTable:
        """Labels of ``files`` from a CSV (when given) or from their UTKFace names."""
        files = [str(f) for f in files]
        if csv_path is not None:
            rows = read_label_csv(csv_path)
            attributes = sorted({a for r in rows.values() for a in r})
            values = {a: [rows.get(Path(f).name, {}).get(a) for f in files] for a in attributes}
            if not any(Path(f).name in rows for f in files):
                raise LabelError(
                    f"{csv_path}: none of the {len(files)} images is listed in its 'file' column "
                    f"(first image: {Path(files[0]).name if files else '-'}); list the images' file names"
                )
            return cls(files, values, f"csv:{Path(csv_path).name}")
        parsed = [utkface_labels(f) for f in files]
        values = {a: [p.get(a) for p in parsed] for a in UTKFACE_ATTRIBUTES}
        return cls(files, values, "utkface-names")

    @property
    def attributes(self) -> list[str]:
        return list(self.values)

    def column(self, attribute: str) -> list[str | None]:
        """The labels of one attribute (``None`` = unlabeled); a clear error for unknown names."""
        if attribute not in self.values:
            raise LabelError(
                f"unknown attribute {attribute!r}; labels from {self.source} give: {', '.join(self.attributes)}"
            )
        return self.values[attribute]

    def categories(self, attribute: str) -> list[str]:
        """The categories of ``attribute`` that occur, in canonical order for UTKFace attributes."""
        present = {v for v in self.column(attribute) if v is not None}
        order = UTKFACE_ATTRIBUTES.get(attribute) if self.source == "utkface-names" else None
        return [c for c in order if c in present] if order else sorted(present)

    def counts(self, attribute: str) -> dict[str, int]:
        col = self.column(attribute)
        return {c: sum(v == c for v in col) for c in self.categories(attribute)}

    def mask(self, conditions: dict[str, str]) -> np.ndarray:
        """Boolean (N,) mask of the images carrying every ``attribute: category`` of ``conditions``."""
        keep = np.ones(len(self.files), dtype=bool)
        for attribute, category in conditions.items():
            col = self.column(attribute)
            known = self.categories(attribute)
            if category not in known:
                raise LabelError(
                    f"no training image has {attribute}={category}; categories present: {', '.join(known) or 'none'}"
                )
            keep &= np.array([v == category for v in col], dtype=bool)
        return keep


def read_label_csv(path: str | Path) -> dict[str, dict[str, str]]:
    """Read ``file,attr1,attr2,...`` rows into ``{file name: {attribute: label}}``.

    Errors name the file and line: no ``file`` column, no attribute column, a file listed twice
    with different labels. Empty cells are unlabeled."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise LabelError(f"cannot read label file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise LabelError(f"label file {path} is not UTF-8 text; save it as a UTF-8 CSV") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if not header:
        raise LabelError(f"label file {path} is empty; expected a header line 'file,<attribute>,...'")
    header = [h.strip() for h in header]
    if "file" not in header:
        raise LabelError(f"label file {path}: the header {header} has no 'file' column")
    attributes = [h for h in header if h != "file"]
    if not attributes or any(not a for a in attributes):
        raise LabelError(f"label file {path}: every column besides 'file' must be a named attribute, got {header}")
    if len(set(header)) != len(header):
        raise LabelError(f"label file {path}: repeated column names in {header}")
    fi = header.index("file")
    rows: dict[str, dict[str, str]] = {}
    for line_no, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise LabelError(f"label file {path}, line {line_no}: {len(row)} fields, the header has {len(header)}")
        name = Path(row[fi].strip()).name
        if not name:
            raise LabelError(f"label file {path}, line {line_no}: empty 'file' field")
        labels = {a: c.strip() for a, c in zip(header, row) if a != "file" and c.strip()}
        if name in rows and rows[name] != labels:
            raise LabelError(f"label file {path}, line {line_no}: {name} is listed twice with different labels")
        rows[name] = labels
    if not rows:
        raise LabelError(f"label file {path} has a header but no rows")
    return rows


def canonical_category(attribute: str, value: str) -> str:
    """The canonical name of ``value`` (``gender=1`` -> ``female``); other attributes unchanged."""
    v = value.strip().lower() if attribute in _ALIASES else value.strip()
    if attribute in _ALIASES:
        v = _ALIASES[attribute].get(v, v)
        if v not in UTKFACE_ATTRIBUTES[attribute]:
            allowed = ", ".join(UTKFACE_ATTRIBUTES[attribute])
            raise LabelError(f"unknown {attribute} value {value!r}; use one of {allowed} (or its code)")
    return v


def parse_conditions(items: list[str] | dict[str, str]) -> dict[str, str]:
    """``["gender=1", "age=senior"]`` (or a dict) -> ``{"gender": "female", "age": "senior"}``."""
    pairs = items.items() if isinstance(items, dict) else []
    if not isinstance(items, dict):
        parsed = []
        for item in items:
            attribute, sep, value = item.partition("=")
            if not sep or not attribute.strip() or not value.strip():
                raise LabelError(f"condition {item!r} is not ATTRIBUTE=VALUE (for example gender=female)")
            parsed.append((attribute.strip(), value))
        pairs = parsed
    out: dict[str, str] = {}
    for attribute, value in pairs:
        category = canonical_category(attribute, str(value))
        if attribute in out and out[attribute] != category:
            raise LabelError(f"conflicting conditions {attribute}={out[attribute]} and {attribute}={category}")
        out[attribute] = category
    return out
