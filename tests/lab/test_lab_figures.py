"""The lab's declared figures (cnnkit.lab.figures) on fixed fake results, no training: plots()
saves what an experiment declares, in order, under its stem and caption; Accuracy and Curves
draw the arms' numbers with the titles and labels the report shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit.lab.figures import CURVES_CAPTION, Accuracy, Curves, Custom, new_figure, plots
from cnnkit.lab.spec import BUDGETS, Arm, ArmRun, Budget, Context, Experiment, FigureRef, Table, combine

ARMS = (Arm("a", "fmnet", label="net A"), Arm("b", "fmnet", label="net B"), Arm("c", "fmnet"))
# two epochs per run; the accuracies are fractions, the figures show percent
HISTORY = {
    "a": [{"train_acc": 0.5, "test_top1_err": 0.4, "train_loss": 1.5}, {"train_acc": 0.7, "test_top1_err": 0.3, "train_loss": 0.9}],
    "b": [{"train_acc": 0.6, "test_top1_err": 0.5, "train_loss": 1.2}, {"train_acc": 0.8, "test_top1_err": 0.2, "train_loss": 0.6}],
}  # fmt: skip
NUMBERS: dict[str, Any] = {
    "arms": {
        "a": {"label": "net A", "test_top1": [0.6, 0.7]},
        "b": {"label": "net B", "test_top1": [0.8]},
        "c": {"label": "c", "test_top1": []},
    }
}


def _context(tmp_path: Path, figures: Any) -> Context:
    budget = Budget(epochs=2)
    exp = Experiment(
        name="fake",
        title="fake",
        claim="c",
        slide="s",
        rule="r",
        budgets=dict.fromkeys(BUDGETS, budget),
        measure=lambda ctx: NUMBERS,
        judge=lambda n: combine([], ""),
        tables=lambda n: [Table("t", ["a"], [])],
        figures=figures,
        arms=ARMS,
    )
    runs = {
        a.name: [ArmRun(a, 0, tmp_path / a.name, {}, {"test_top1": 0.5}, HISTORY[a.name])]
        for a in ARMS
        if a.name in HISTORY
    }  # arm c never finished: no curve
    return Context(exp, "quick", budget, "synthetic", tmp_path, runs)


def test_plots_saves_the_declared_figures_in_order_and_leaves_out_what_is_not_drawn(tmp_path: Path) -> None:
    def line(ctx: Context, n: dict[str, Any]) -> Any:
        fig = new_figure(3, 2)
        fig.add_subplot().plot([0, 1], [0, 1])
        return fig

    figures = plots(
        Custom("line", "a line", line),
        Accuracy("per arm"),
        Custom("nothing", "not drawn", lambda ctx, n: None),
        Curves(),
        Curves("the loss", loss=True, stem="loss"),
    )
    refs = figures(_context(tmp_path, figures), NUMBERS)
    assert refs == [
        FigureRef("line.png", "a line"),
        FigureRef("accuracy.png", "per arm"),
        FigureRef("curves.png", "Training error (thin) and test error (bold) by epoch."),
        FigureRef("loss.png", "the loss"),
    ]
    assert CURVES_CAPTION == "Training error (thin) and test error (bold) by epoch."
    for ref in refs:
        assert (tmp_path / ref.file).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "nothing.png").exists()


def test_accuracy_bars_every_arm_at_its_mean_with_a_dot_per_seed(tmp_path: Path) -> None:
    ctx = _context(tmp_path, None)
    (ax,) = Accuracy("x").draw(ctx, NUMBERS).axes
    assert (ax.get_title(), ax.get_ylabel()) == ("accuracy", "test top-1 (%)")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["net A", "net B", "c"]
    assert [round(p.get_height(), 6) for p in ax.patches] == [65.0, 80.0]  # c: no seed, no bar
    assert [list(line.get_ydata()) for line in ax.get_lines()] == [[60.0, 70.0], [80.0]]
    lo, _ = ax.get_ylim()
    assert lo > 0  # zoomed to the data
    (ax,) = Accuracy("x", title="after training", zoom=False).draw(ctx, NUMBERS).axes
    assert ax.get_title() == "after training" and ax.get_ylim()[0] == 0


def test_curves_draw_one_panel_per_group_train_thin_and_test_bold(tmp_path: Path) -> None:
    ctx = _context(tmp_path, None)
    (ax,) = Curves().draw(ctx, NUMBERS).axes
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("error by epoch", "epoch", "error (%)")
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["net A (train)", "net A (test)", "net B (train)", "net B (test)"]
    assert [round(y, 6) for y in lines["net A (train)"].get_ydata()] == [50.0, 30.0]
    assert [round(y, 6) for y in lines["net B (test)"].get_ydata()] == [50.0, 20.0]
    assert lines["net A (train)"].get_linewidth() < lines["net A (test)"].get_linewidth()

    left, right = Curves(panels=(("first", ["b"]), ("all", None))).draw(ctx, NUMBERS).axes
    assert (left.get_title(), right.get_title()) == ("first", "all")
    assert [line.get_label() for line in left.get_lines()] == ["net B (train)", "net B (test)"]
    assert len(right.get_lines()) == 4

    (ax,) = Curves(loss=True).draw(ctx, NUMBERS).axes
    assert ax.get_ylabel() == "training loss"
    assert [line.get_label() for line in ax.get_lines()] == ["net A (train loss)", "net B (train loss)"]
    assert [round(y, 6) for y in ax.get_lines()[1].get_ydata()] == [1.2, 0.6]
