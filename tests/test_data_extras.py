"""Extras selection on a hand-made box CSV: every rule of docs/challenge.md section 1."""

from __future__ import annotations

from llrnet.data.bird_or_bicycle import ExtrasRule, select_extras

HEADER = ("ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,"
          "IsTruncated,IsGroupOf,IsDepiction,IsInside")
BIRD, BICYCLE, CAT = "/m/015p6", "/m/0199g", "/m/01yrx"


def row(image_id: str, label: str, xmin: float, xmax: float, ymin: float, ymax: float) -> str:
    return f"{image_id},xclick,{label},1,{xmin},{xmax},{ymin},{ymax},0,0,0,0,0"


def hex_id(n: int) -> str:
    return f"{n:016x}"


LINES = [
    HEADER,
    row(hex_id(1), BIRD, 0.0, 0.5, 0.0, 0.08),    # area exactly 0.04: NOT > 0.04
    row(hex_id(2), BIRD, 0.0, 0.21, 0.0, 0.2),    # area 0.042: in
    row(hex_id(3), BIRD, 0.0, 0.1, 0.0, 0.1),     # small box ...
    row(hex_id(3), BIRD, 0.5, 1.0, 0.5, 1.0),     # ... and a big one: in (once)
    row(hex_id(4), CAT, 0.0, 1.0, 0.0, 1.0),      # other class: ignored
    row(hex_id(5), BIRD, 0.0, 1.0, 0.0, 1.0),     # bird test id: excluded
    row(hex_id(6), BIRD, 0.0, 1.0, 0.0, 1.0),     # bird + small bicycle: ambiguous
    row(hex_id(6), BICYCLE, 0.0, 0.1, 0.0, 0.1),
    row(hex_id(7), BICYCLE, 0.0, 0.5, 0.0, 0.5),  # bicycle in
    row(hex_id(8), BICYCLE, 0.0, 0.5, 0.0, 0.5),  # a bird train id, as bicycle extra
    row(hex_id(9), BIRD, 0.0, 0.5, 0.0, 0.5),     # in
    row(hex_id(10), BIRD, 0.0, 0.5, 0.0, 0.5),    # in, but beyond the truncation below
    row(hex_id(6), BICYCLE, 0.0, 0.1, 0.5, 0.8),  # ambiguous image again, small bicycle
]
EXCLUDE = {"bird": [hex_id(5), hex_id(8)], "bicycle": [hex_id(100)]}


def test_default_rule_area_labels_exclusion_sorted_truncation() -> None:
    selected = select_extras(LINES, EXCLUDE, ExtrasRule(per_class=4))
    # Sorted, first 4: 2, 3, 6, 9 (10 is cut; 1 too small; 5 excluded; 4 a cat).
    assert selected["bird"] == [hex_id(2), hex_id(3), hex_id(6), hex_id(9)]
    # Only the bicycle's own train/test ids are excluded (the original's rule),
    # so a bird train id may appear as a bicycle extra; 6's bicycle boxes are small.
    assert selected["bicycle"] == [hex_id(7), hex_id(8)]
    assert list(selected) == ["bicycle", "bird"]


def test_truncation_keeps_the_smallest_ids() -> None:
    assert select_extras(LINES, EXCLUDE, ExtrasRule(per_class=2))["bird"] == [hex_id(2), hex_id(3)]
    everything = select_extras(LINES, EXCLUDE, ExtrasRule(per_class=100))
    assert everything["bird"] == [hex_id(n) for n in (2, 3, 6, 9, 10)]


def test_exclude_ambiguous_drops_images_with_both_classes_and_all_split_ids() -> None:
    selected = select_extras(LINES, EXCLUDE, ExtrasRule(per_class=100, exclude_ambiguous=True))
    assert selected["bird"] == [hex_id(n) for n in (2, 3, 9, 10)]  # 6 has a bicycle
    assert selected["bicycle"] == [hex_id(7)]  # 8 is a bird train id


def test_min_area_is_a_parameter_and_header_order_is_free() -> None:
    # Columns in another order: selection reads them by name.
    header = "LabelName,ImageID,XMin,XMax,YMin,YMax"
    lines = [header, f"{BIRD},{hex_id(1)},0,0.5,0,0.5", f"{BIRD},{hex_id(2)},0,0.9,0,0.9"]
    assert select_extras(lines, {}, ExtrasRule(min_area=0.5))["bird"] == [hex_id(2)]
    assert select_extras(lines, {}, ExtrasRule(min_area=0.2))["bird"] == [hex_id(1), hex_id(2)]
