"""Time two or more step functions in alternating blocks, so that a shared machine's slow
and fast moments fall on every contender alike and the ratio of medians stays fair."""
import statistics
import time


def time_blocks(steps, iters, block=2):
    """Run each step function once (warm-up), then `block` times in turn until each has run
    `iters` times; returns the median seconds of each."""
    times = [[] for _ in steps]
    for fn in steps:  # warm up
        fn()
    done = 0
    while done < iters:
        for k, fn in enumerate(steps):
            for _ in range(block):
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
        done += block
    return [statistics.median(t) for t in times]
