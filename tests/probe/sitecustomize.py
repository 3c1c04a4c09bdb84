"""Loaded by the processes the distributed tests launch (on their PYTHONPATH): each records the
training batches it iterates, as JSON lines in $TWEETLM_PROBE_DIR/batches-<rank>.jsonl."""

import json
import os
from pathlib import Path

if os.environ.get("TWEETLM_PROBE_DIR"):
    from tweetlm.dataset import EpochBatches

    _iter = EpochBatches.__iter__

    def _recorded(self):  # type: ignore[no-untyped-def]
        out = Path(os.environ["TWEETLM_PROBE_DIR"]) / f"batches-{os.environ.get('RANK', '0')}.jsonl"
        for batch in _iter(self):
            with out.open("a") as f:
                f.write(json.dumps({"epoch": self.epoch, "batch": batch}) + "\n")
            yield batch

    EpochBatches.__iter__ = _recorded  # type: ignore[method-assign]
