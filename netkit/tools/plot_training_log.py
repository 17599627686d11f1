"""`netkit plot_training_log CHART OUT LOG...`: Caffe's plot_training_log charts.

CHART is Caffe's number (0-7) or its name: test accuracy, test loss, train learning rate or
train loss, against iterations or seconds. Each LOG (netkit's or Caffe's) is one line,
read through parse_log. The image format follows OUT's extension (png, svg, pdf ...).
Needs matplotlib (`pip install 'netkit[plot]'`).
"""
import os

import click

# Caffe's chart numbers: (table, column, x axis).
CHARTS = [
    ("test", "accuracy", "NumIters"), ("test", "accuracy", "Seconds"),
    ("test", "loss", "NumIters"), ("test", "loss", "Seconds"),
    ("train", "LearningRate", "NumIters"), ("train", "LearningRate", "Seconds"),
    ("train", "loss", "NumIters"), ("train", "loss", "Seconds"),
]
AXIS_LABELS = {"NumIters": "Iterations", "Seconds": "Seconds", "LearningRate": "Learning rate",
               "accuracy": "Accuracy", "loss": "Loss"}


def chart_name(index):
    table, column, x = CHARTS[index]
    return "%s %s vs. %s" % (table.capitalize(), AXIS_LABELS[column].lower(), AXIS_LABELS[x])


def plot_training_log(chart, out, logs):
    """Draw chart number `chart` for each log in `logs` into the image file `out`."""
    from ..errors import NetkitError
    from .parse_log import parse_log
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NetkitError("plot_training_log needs matplotlib: pip install 'netkit[plot]'") \
            from None
    table, column, x = CHARTS[chart]
    fig, ax = plt.subplots(figsize=(8, 5))
    for log in logs:
        train, test = parse_log(log)
        rows = [r for r in (train if table == "train" else test) if column in r]
        if not rows:
            raise NetkitError("%s: no %s net output named '%s' to plot" % (log, table, column))
        ax.plot([r[x] for r in rows], [r[column] for r in rows], marker=".",
                label=os.path.basename(log))
    ax.set_title(chart_name(chart))
    ax.set_xlabel(AXIS_LABELS[x])
    ax.set_ylabel(AXIS_LABELS[column])
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


@click.command("plot_training_log", epilog="Charts: " + "; ".join(
    "%d: %s" % (i, chart_name(i)) for i in range(len(CHARTS))))
@click.argument("chart", type=click.IntRange(0, len(CHARTS) - 1))
@click.argument("out")
@click.argument("logs", nargs=-1, required=True)
def command(chart, out, logs):
    """Plot CHART (0-7, see below) from training LOGS into the image OUT."""
    plot_training_log(chart, out, logs)
