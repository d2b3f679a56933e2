"""Four paste-ready prompts for Claude Code, adapted to this repository, for `ccctl prompt NAME`.

They live in code (not data files) so an installed package has them without package-data
plumbing. docs/PROMPTS.md is generated from :func:`render_markdown` (``ccctl prompt --markdown``)
and a test checks the two are identical, so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prompt:
    name: str
    letter: str
    title: str
    when: str  # one line for the list and the docs: what it is for
    text: str


REVIEW = """\
Use the haiku-subagent for every scan and grep in this task; keep the judgement here.

Security and minimal-diff code review of the ccmitm routing path. Scope:
- daemon/proxy/addon.py (the mitmproxy addon: request/responseheaders/response/error hooks, key
  injection, usage records), daemon/core/routing.py (the routing decision),
  daemon/core/crosslane.py, daemon/proxy/failover.py, daemon/core/redact.py, daemon/logs/usage.py
- the scripts around it: etc/shell/ccmitm.sh, Makefile, service/ (systemd and launchd units),
  logrotate/ccmitm

1. Ask haiku-subagent to map where credentials flow: every read or write of x-api-key,
   authorization, anthropic-beta and the lane key (LaneEndpoint.key), with file:line.
2. Ask haiku-subagent to list every place user-controlled text (model names, headers, error
   bodies) reaches a log line, a status reply or a file, and whether clean_text() is applied.
3. From those lists, review: can a client key reach the offload lane, or the Z.AI key reach
   Anthropic? Can a stream be buffered instead of forwarded event by event? Can a failure leave
   the client hanging instead of falling back to Anthropic with a visible reason?
4. For each real finding give severity, file:line, and the smallest diff that fixes it. Have
   haiku-subagent apply only diffs I approve, one at a time, and run
   `.venv/bin/ruff check daemon tests` after each.
Do not reformat, rename or restructure anything that is not part of a fix.
"""

MAP = """\
Use the haiku-subagent for the scanning; summarise its findings here.

Build a repo map of this repository (ccmitm: daemon/ is the Python package `ccmitm`, tests/,
docs/, etc/, service/, logrotate/, Makefile, pyproject.toml).
1. Ask haiku-subagent for one line per module under daemon/ saying what it does and what it imports
   from the others, and one line per test file in tests/ saying what it proves.
2. Ask haiku-subagent to run `git log --since=1.week --name-only --format=` and
   `git log --before=1.month --name-only --format=` and to sort files into "changed this week"
   and "older than a month" (untouched for a month or more).
3. Present the map as a short tree with those two labels, plus the entry points
   (ccmitmd = ccmitm.supervisor, ccctl = ccmitm.cli) and where config, usage log and bundles live.
4. Finish with three quick wins: small, low-risk changes (dead code, a missing test, a confusing
   name or doc line) with file:line and a one-line reason each. Do not change any file.
"""

AUDIT = """\
Use the haiku-subagent to read the log; do the reasoning here.

Header-hygiene self-audit of my ccmitm usage log, the same rules `ccctl verify` checks
(daemon/reports/audit.py, verify()). The log is ~/.local/state/ccmitm/logs/usage.jsonl (or logs.dir in
~/.config/ccmitm/config.yaml), one JSON object per call with fields such as lane, rule, reason,
model, upstream_model, status, header_mode, request_class, session, attempt_of.
Ask haiku-subagent to read the last 24 hours of it and check:
(a) no Haiku Messages call (POST .../v1/messages, "haiku" anywhere in model) completed on the
    default lane "anthropic" unless its reason is an override (paused, lane_unavailable, breaker,
    failover, rule_disabled);
(b) every line on the keyed lane "zai" has header_mode "x-api-key" or "authorization";
(c) every line on "anthropic" has header_mode "passthrough" (no lane key was ever sent there);
(d) every non-Haiku model on "zai" has a rule whose glob matches it.
Then count calls by request_class (subagent vs main) per lane. Report each check as PASS/FAIL
with counts and, for a FAIL, the offending lines. Then run `ccctl verify --since 24h` and say
whether your verdict and its verdict agree; if they differ, explain why. Never print keys.
"""

EXPLAINER = """\
Explain, for a colleague, what happens in these two terminals, using this repository
(README.md, docs/wiring.md, docs/architecture.md, daemon/proxy/addon.py, daemon/core/routing.py) as the
source; use the haiku-subagent for looking things up.

Terminal 1 (proxied):  eval "$(ccctl env --subagent)"; claude
Terminal 2 (stock):    eval "$(ccctl env --stock)"; claude

For each terminal: which environment variables are set, which host Claude Code connects to,
whether TLS is intercepted, which credential goes where, where a Sonnet call and a Haiku call
(including a haiku-subagent call) end up, and what lands in the usage log. Then show how to prove
it: `ccctl status` (per-lane counts, subagent vs main), `ccctl summarize --since 1h` and
`ccctl verify --since 1h --proof`. Keep it to one page, with a small table comparing the two.
"""

PROMPTS: tuple[Prompt, ...] = (
    Prompt(
        "review", "A", "Security and minimal-diff code review", "review the routing addon and scripts", REVIEW
    ),
    Prompt("map", "B", "Repo map with quick wins", "map the repo: this week vs older than a month", MAP),
    Prompt(
        "audit",
        "C",
        "Header-hygiene self-audit of the usage log",
        "what `ccctl verify` checks, as a prompt",
        AUDIT,
    ),
    Prompt("explainer", "D", "Two-terminal explainer", "proxied vs stock, side by side", EXPLAINER),
)


def find(name: str) -> Prompt | None:
    """By name (``review``) or letter (``A``/``a``)."""
    wanted = name.strip().lower()
    for prompt in PROMPTS:
        if wanted in (prompt.name, prompt.letter.lower()):
            return prompt
    return None


def render_markdown() -> str:
    """docs/PROMPTS.md, exactly."""
    out = [
        "# Ready prompts",
        "",
        "<!-- generated by `ccctl prompt --markdown > docs/PROMPTS.md` from daemon/install/prompts.py; "
        "edit there -->",
        "",
        'Paste-ready prompts for Claude Code with ccmitm wired in (`eval "$(ccctl env --subagent)"` or',
        "`ccsub`) and the Haiku subagent installed (`ccctl subagent install`, see",
        "[subagents.md](subagents.md)). Sonnet orchestrates; the scans and greps run in haiku-subagent,",
        "whose calls go to the offload lane. `ccctl prompt NAME` prints one, ready to paste.",
        "",
    ]
    for prompt in PROMPTS:
        out += [
            f"## ({prompt.letter}) {prompt.title}: `ccctl prompt {prompt.name}`",
            "",
            f"{prompt.when[0].upper()}{prompt.when[1:]}.",
            "",
            "```text",
            prompt.text.rstrip("\n"),
            "```",
            "",
        ]
    return "\n".join(out)
