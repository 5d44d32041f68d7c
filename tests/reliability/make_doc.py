"""Render docs/reliability.md from the suite's own results (tests/reliability/results.json).

    .venv/bin/python -m pytest tests/reliability && .venv/bin/python tests/reliability/make_doc.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

INTRO = """# Reliability: bad input and injected faults

Every row below is a test in `tests/reliability/`, run through the real CLI (`typer.testing.CliRunner` on
`distill.cli.app`, and `python -m distill` for the `test_real_process.py` rows). This page is generated from
that run: `{command}`, then `.venv/bin/python tests/reliability/make_doc.py`. Do not edit it by hand.

Contract checked by every bad-input row: exit code 2, no traceback, exactly one `error:` line on stderr
(recipes: one header line naming the recipe file, then one indented line per problem, each naming its key),
the message names the file and the key or question id, and no file of the user's (inputs, an existing
`output_dir`) changes: their sha256 is compared before and after. `distill run` rows also check that neither
`output_dir` nor `cache_dir` was created. Kill/resume rows use a 2-layer BERT teacher (hidden 32), 40 training
questions, `max_seq_length` 96, ZeRO-2 fp32 on CPU, `checkpoint_every` 2, `max_steps` 6, and compare teacher
and student EM/F1 and every logged loss for exact equality with an uninterrupted run.

Last run: {generated}: **{passed} of {total} passed**{failed_note}, {seconds:.0f} s of test time.
"""


def cell(text: str, limit: int = 260) -> str:
    text = re.sub(r"/tmp/pytest-of-[^/\s]+/pytest-\d+/[^/\s]+/", "TMP/", str(text))
    text = " ".join(str(text).split()) if "\n" not in str(text) else "<br>".join(
        " ".join(line.split()) for line in str(text).splitlines() if line.strip())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def render(results: dict) -> str:
    cases = results["cases"]
    passed = sum(c["outcome"] == "passed" for c in cases)
    failed = [c["id"] for c in cases if c["outcome"] != "passed"]
    out = [INTRO.format(command=results.get("command", ".venv/bin/python -m pytest tests/reliability"),
                        generated=results["generated"], passed=passed, total=len(cases),
                        failed_note=f" (FAILED: {', '.join(failed)})" if failed else "",
                        seconds=sum(c["seconds"] for c in cases))]
    groups: dict[str, list[dict]] = {}
    for c in cases:
        groups.setdefault(c["file"], []).append(c)
    for file, rows in groups.items():
        out.append(f"\n## `{file}`\n")
        out.append("| # | case | input | expected | observed | outcome |")
        out.append("|---|---|---|---|---|---|")
        for i, c in enumerate(rows, 1):
            name = c["id"].split("[", 1)[1].rstrip("]") if "[" in c["id"] else c["id"]
            name = name + (" (slow)" if c.get("slow") else "")
            out.append(f"| {i} | `{cell(name)}`<br>{cell(c['description'])} | {cell(c['input'])} | "
                       f"{cell(c['expected'])} | {cell(c['observed'])} | {c['outcome']} ({c['seconds']:.1f} s) |")
    out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv else HERE / "results.json"
    dst = Path(argv[1]) if len(argv) > 1 else ROOT / "docs" / "reliability.md"
    dst.write_text(render(json.loads(src.read_text())))
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
