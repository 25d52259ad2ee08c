"""The landing page: each account's state, demo mode, everything escaped."""

from __future__ import annotations

import calendar
from html.parser import HTMLParser

from exporter.landing import AccountStatus, render_landing

NOW = calendar.timegm((2024, 5, 1, 12, 0, 0))


class Text(HTMLParser):
    """The page's text and tags, to check structure without regexes."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.cells: list[str] = []
        self.hrefs: list[str] = []
        self.open: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.open.append(tag)
        if tag == "a":
            self.hrefs.append(dict(attrs)["href"] or "")
        if tag in ("td", "th"):
            self._in_cell = True
            self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, (self.open, tag)
        self.open.pop()
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_cell:
            self.cells[-1] += data


def parse(page: bytes) -> Text:
    parser = Text()
    # <meta> is a void element; drop it so the open-tag stack stays simple.
    body = page.decode().replace('<meta charset="utf-8">', "").replace(
        '<meta name="viewport" content="width=device-width">', "")
    parser.feed(body)
    parser.close()
    assert parser.open == []  # every element closed
    return parser


def test_accounts_and_their_state() -> None:
    page = render_landing("1.2.3", demo=False, now=NOW, accounts=[
        AccountStatus("main", True, NOW - 12, None, True),
        AccountStatus("hedge", False, NOW - 7200, "auth", False),
        AccountStatus("new", False, None, "timeout", None),
    ])
    parsed = parse(page)
    assert parsed.cells == [
        "Account", "State", "Last success", "Error", "User data stream",
        "main", "up", "12 s ago (2024-05-01 11:59:48 UTC)", "", "connected",
        "hedge", "down", "2 h ago (2024-05-01 10:00:00 UTC)", "auth", "disconnected",
        "new", "down", "never", "timeout", "\u2013",  # en dash: not known
    ]
    assert "Version 1.2.3" in "".join(parsed.text)
    assert "Demo" not in "".join(parsed.text)
    assert parsed.hrefs == ["metrics", "healthz"]  # relative: works under a path prefix


def test_demo_mode_is_marked() -> None:
    page = render_landing("1.2.3", demo=True, now=NOW,
                          accounts=[AccountStatus("demo-1", True, NOW, None, None)])
    text = "".join(parse(page).text)
    assert "Binance Futures Exporter (demo)" in text
    assert "Demo mode:" in text and "simulated" in text


def test_everything_is_escaped() -> None:
    hostile = '<script>alert("x")</script>&'
    page = render_landing(hostile, demo=False, now=NOW,
                          accounts=[AccountStatus(hostile, False, None, hostile, None)])
    assert b"<script>" not in page
    parsed = parse(page)
    assert parsed.cells[5] == hostile and parsed.cells[8] == hostile
    assert f"Version {hostile}" in "".join(parsed.text)


def test_without_accounts_there_is_no_table() -> None:
    parsed = parse(render_landing("", demo=False, accounts=(), now=NOW))
    assert parsed.cells == []
    assert "ccount" not in "".join(parsed.text)  # no claim about accounts at all
    assert "Version" not in "".join(parsed.text)


def test_ages_and_impossible_times() -> None:
    cells = parse(render_landing("", demo=False, now=NOW, accounts=[
        AccountStatus("a", True, NOW - 90, None, None),
        AccountStatus("b", True, NOW - 600, None, None),
        AccountStatus("c", True, NOW - 3 * 86400, None, None),
        AccountStatus("d", True, NOW + 5, None, None),  # clock stepped back: never negative
        AccountStatus("e", True, 1e300, None, None),
        AccountStatus("f", True, float("nan"), None, None),
    ])).cells
    assert [cells[i] for i in range(7, len(cells), 5)] == [
        "90 s ago (2024-05-01 11:58:30 UTC)",
        "10 min ago (2024-05-01 11:50:00 UTC)",
        "3 d ago (2024-04-28 12:00:00 UTC)",
        "0 s ago (2024-05-01 12:00:05 UTC)",
        "unknown",
        "unknown",
    ]
