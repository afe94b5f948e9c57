"""KeyboardInterrupt at every point one can land inside ``write_temp`` (see interrupt_points.py):
after each, the temp file is gone, as its docstring promises for any failure or interruption.

Without the removal on that path, an interrupt landing as ``os.open`` returned (the file made,
its descriptor lost with the result) leaves the temp file behind; the callers that remove it
themselves hide this, a new caller would not.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from agent_coherence.durable import write_temp

from interrupt_points import interrupt_points


def test_an_interrupted_write_temp_leaves_no_temp_file_at_every_point(tmp_path: Path) -> None:
    names = (str(tmp_path / f".target.{n}.ac-tmp") for n in itertools.count())
    current = [""]

    def write() -> None:
        current[0] = next(names)
        write_temp(current[0], b"payload\n" * 100)

    points = 0
    for landed in interrupt_points(write):
        points += 1
        assert landed.came_out_as_itself, landed
        assert os.listdir(tmp_path) == [], landed
    assert points > 5
    assert os.listdir(tmp_path) == [os.path.basename(current[0])]  # the uninterrupted run's file
