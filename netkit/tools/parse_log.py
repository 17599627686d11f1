"""`netkit parse_log LOG OUTDIR`: training log -> LOG.train and LOG.test CSV tables.

Reads netkit's logs and Caffe's own (both are glog lines) the way Caffe's
tools/extra/parse_log.py does, and writes the same tables: NumIters, Seconds (since the
line that says "Solving"), LearningRate, then one column per net output. A row is written
once it has as many columns as the first row; the first row's learning rate, logged after
its outputs, is taken from the second row, as Caffe's script does.
"""
import csv
import datetime
import os
import re

import click

ITERATION = re.compile(r"Iteration (\d+)")
TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")


def line_time(line, year):
    """The datetime of a glog line 'Immdd hh:mm:ss.uuuuuu ...'; ValueError if it has none."""
    fields = line.strip().split()
    if len(fields) < 2 or len(fields[0]) < 5:
        raise ValueError("not a glog line")
    clock, _, micro = fields[1].partition(".")
    hour, minute, second = (int(x) for x in clock.split(":"))
    return datetime.datetime(year, int(fields[0][1:3]), int(fields[0][3:5]), hour, minute,
                             second, int(micro or 0))


class _Table:
    """Rows of one net's outputs, grouped by iteration as Caffe's parse_log groups them."""

    def __init__(self, pattern):
        self.pattern = pattern
        self.rows = []
        self.row = None

    def feed(self, line, iteration, seconds, rate):
        match = self.pattern.search(line)
        if match:
            if self.row is None or self.row["NumIters"] != iteration:
                if self.row is not None:
                    self.rows.append(self.row)
                self.row = {"NumIters": iteration, "Seconds": seconds, "LearningRate": rate}
            self.row[match.group(2)] = float(match.group(3))
        if self.row is not None and self.rows and len(self.row) == len(self.rows[0]):
            self.rows.append(self.row)
            self.row = None

    def finish(self):
        if len(self.rows) > 1:
            self.rows[0]["LearningRate"] = self.rows[1]["LearningRate"]
        return self.rows


def parse_log(path):
    """(train rows, test rows): lists of dicts keyed NumIters, Seconds, LearningRate, outputs."""
    from ..errors import NetkitError
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError as e:
        raise NetkitError("%s: cannot read: %s" % (path, e.strerror or e)) from None
    year = datetime.datetime.fromtimestamp(os.path.getmtime(path)).year
    start = None
    for line in lines:
        if "Solving" in line:
            try:
                start = line_time(line, year)
            except ValueError:
                continue
            break
    if start is None:
        raise NetkitError("%s: no 'Solving' line: not a netkit or Caffe training log" % path)
    train, test = _Table(TRAIN_OUTPUT), _Table(TEST_OUTPUT)
    iteration, rate, last = -1, float("nan"), start
    for line in lines:
        match = ITERATION.search(line)
        if match:
            iteration = float(match.group(1))
        if iteration == -1:
            continue
        try:
            when = line_time(line, year)
        except ValueError:
            continue
        if when.month < last.month:  # the log ran into a new year
            year += 1
            when = line_time(line, year)
        last = when
        seconds = (when - start).total_seconds()
        match = LEARNING_RATE.search(line)
        if match:
            rate = float(match.group(1))
        train.feed(line, iteration, seconds, rate)
        test.feed(line, iteration, seconds, rate)
    return train.finish(), test.finish()


def write_table(path, rows, delimiter):
    if not rows:
        return False
    from ..protoio import write_atomic
    lines = []

    class Sink:
        write = lines.append

    writer = csv.DictWriter(Sink(), fieldnames=list(rows[0]), delimiter=delimiter,
                            lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, "".join(lines).encode())
    return True


@click.command("parse_log")
@click.argument("logfile")
@click.argument("output_dir")
@click.option("--delimiter", default=",", help="Column separator of the tables.")
@click.option("--verbose", is_flag=True, help="Say what was written.")
def command(logfile, output_dir, delimiter, verbose):
    """Parse a netkit or Caffe training LOGFILE into OUTPUT_DIR/LOGFILE.train and .test CSVs."""
    train, test = parse_log(logfile)
    base = os.path.join(output_dir, os.path.basename(logfile))
    for suffix, rows in ((".train", train), (".test", test)):
        written = write_table(base + suffix, rows, delimiter)
        if verbose:
            click.echo(("Wrote %s" if written else "Not writing %s; no lines to write")
                       % (base + suffix))
