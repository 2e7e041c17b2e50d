"""What the previous instance's spot watcher left on the data volume, for the access summary.

Run by roles/spot_watch/tasks/last_interruption.yml with the box's python3 (standard
library only): python3 -c SOURCE MOUNT_POINT STATE_DIR apply|check. The watcher
(spotbox-spot-watch) writes MOUNT_POINT/.spotbox/last-interruption.json just before
it syncs and unmounts the volume. The first provisioning of the next instance moves
it to STATE_DIR/previous-interruption.json on the root disk (this instance's), so
that its later runs tell it again and the instance after it does not. Prints JSON:
changed, record (or null), message (one line, or "").
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys

RECORD = ".spotbox/last-interruption.json"
KEPT = "previous-interruption.json"
ACTIONS = {"terminate": "terminate", "stop": "stop", "hibernate": "hibernate"}


def read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def clock(text: object) -> str:
    """'2026-11-29T14:02:00Z' -> '14:02 UTC on 2026-11-29'; anything else as it is."""
    for form in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            when = dt.datetime.strptime(str(text), form)
        except ValueError:
            continue
        return f"{when:%H:%M} UTC on {when:%Y-%m-%d}"
    return str(text)


def hooks_part(hooks: object) -> str:
    if not isinstance(hooks, list):
        return "hooks: not recorded"
    if not hooks:
        return "no hooks to run"
    results = [f"{h.get('name', '?')} {h.get('result', '?')}" for h in hooks
               if isinstance(h, dict)]
    good = all(isinstance(h, dict) and h.get("result") == "ok" for h in hooks)
    return f"{'hooks ran' if good else 'hooks ran, not all well'} ({', '.join(results)})"


def message(record: dict) -> str:
    """One line: when, which instance, what the watcher did; honest about the unmount."""
    action = ACTIONS.get(str(record.get("action")), f"unknown action {record.get('action')!r}")
    instance = record.get("instance_id")
    who = f"the previous instance ({instance})" if instance else "the previous instance"
    head = f"{who} was interrupted at {clock(record.get('time'))} ({action})"
    if record.get("state") != "unmounting":
        return f"{head}; its notice handling was not finished (state {record.get('state')!r})"
    jupyter = {"stopped": "Jupyter stopped", "absent": "no Jupyter to stop",
               "killed": "Jupyter killed (it did not stop in time)"}.get(
        str(record.get("jupyter")), f"Jupyter {record.get('jupyter', 'not recorded')}")
    return (f"{head}; the notice was handled: {hooks_part(record.get('hooks'))}, {jupyter}, "
            "then the disks' sync and the data volume's unmount started (their end cannot be "
            "recorded on the volume they end)")


def main(argv: list[str]) -> dict:
    mount_point, state_dir, mode = argv
    left = os.path.join(mount_point, RECORD)
    kept = os.path.join(state_dir, KEPT)
    record, changed = read(left), False
    if record is not None:
        changed = True
        if mode == "apply":
            os.makedirs(state_dir, mode=0o755, exist_ok=True)
            with open(f"{kept}.tmp", "w", encoding="utf-8") as out:
                json.dump(record, out, indent=2, sort_keys=True)
                out.write("\n")
            os.replace(f"{kept}.tmp", kept)
            os.unlink(left)
    elif os.path.exists(left):
        changed = True  # not a record: moved aside, never read again
        if mode == "apply":
            os.replace(left, f"{left}.unreadable")
    else:
        record = read(kept)
    return {"changed": changed, "record": record,
            "message": message(record) if record is not None else ""}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
