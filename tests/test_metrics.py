import pytest

from repeval.errors import InvalidChoiceError
from repeval.metrics import delta_mtl

SINGLE = {"age": {"acc": 0.5233}, "gender": {"acc": 0.8964}, "race": {"acc": 0.7728}}


@pytest.mark.parametrize(("row", "expected"), [
    ({"age": 0.5391, "gender": 0.9153, "race": 0.7948}, 2.66),  # Vanilla
    ({"age": 0.5605, "gender": 0.9019, "race": 0.7942}, 3.50),  # + Ours (DGR)
    ({"age": 0.5390, "gender": 0.9239, "race": 0.7994}, 3.17),  # CAGrad
    ({"age": 0.5510, "gender": 0.9169, "race": 0.8094}, 4.11),  # CAGrad + Ours
])
def test_paper_table_1(row, expected):
    multi = {t: {"acc": v} for t, v in row.items()}
    assert round(100 * delta_mtl(multi, SINGLE), 2) == expected


def test_lower_is_better_metrics_flip_sign():
    single = {"seg": {"miou": 0.5}, "depth": {"abs_err": 0.8}}
    multi = {"seg": {"miou": 0.55}, "depth": {"abs_err": 0.72}}
    assert delta_mtl(multi, single, lower_is_better={"abs_err"}) == pytest.approx((0.1 + 0.1) / 2)


def test_the_three_variants_differ_as_defined():
    single = {"a": {"m1": 1.0, "m2": 1.0, "m3": 1.0}, "b": {"m1": 1.0}}
    multi = {"a": {"m1": 1.3, "m2": 1.0, "m3": 1.0}, "b": {"m1": 1.1}}
    assert delta_mtl(multi, single, variant="per-task") == pytest.approx((0.3 + 0.1) / 2)
    assert delta_mtl(multi, single, variant="all-metrics") == pytest.approx((0.3 + 0 + 0 + 0.1) / 4)
    assert delta_mtl(multi, single, variant="task-then-metrics") == pytest.approx((0.1 + 0.1) / 2)
    assert delta_mtl(multi, single, variant="per-task", primary={"a": "m2"}) == pytest.approx(0.05)


def test_bad_input():
    with pytest.raises(InvalidChoiceError, match="'variant' parameter of delta_mtl must be one of"):
        delta_mtl(SINGLE, SINGLE, variant="mean")
    with pytest.raises(ValueError, match="lack task"):
        delta_mtl({"age": {"acc": 0.5}}, SINGLE)
