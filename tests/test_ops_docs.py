"""The documentation: the README's production and dashboard sections, docs/runbook.md
(every runbook_url anchor lands on a runbook heading) and docs/kubernetes.md (its
manifests parse and keep the conventions); links resolve, examples parse."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.support.ops import REPO, alert_rules, recording_rule_names

README = REPO / "README.md"
RUNBOOK = REPO / "docs" / "runbook.md"
KUBERNETES = REPO / "docs" / "kubernetes.md"
RUNBOOK_PREFIX = (
    "https://github.com/binance-futures-exporter/binance-futures-exporter/blob/main/docs/runbook.md#"
)


def github_anchor(heading: str) -> str:
    """GitHub's heading id: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]{1,2}(?=\S)|(?<=\S)[`*_]{1,2}", "", heading.strip())
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def headings(markdown: str) -> list[tuple[int, str]]:
    """(level, text) of every ATX heading outside fenced code blocks."""
    found: list[tuple[int, str]] = []
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"(#{1,6})\s+(.+?)\s*#*\s*$", line)
        if match and not fenced:
            found.append((len(match.group(1)), match.group(2)))
    return found


def anchors(markdown: str) -> list[str]:
    """Anchors in document order, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    result: list[str] = []
    for _, text in headings(markdown):
        anchor = github_anchor(text)
        if anchor in seen:
            seen[anchor] += 1
            anchor = f"{anchor}-{seen[anchor]}"
        else:
            seen[anchor] = 0
        result.append(anchor)
    return result


def runbook_headings(markdown: str) -> list[str]:
    """Texts of the ### headings inside '## Runbook'."""
    inside = False
    found: list[str] = []
    for level, text in headings(markdown):
        if level == 2:
            inside = text == "Runbook"
        elif level == 3 and inside:
            found.append(text)
    return found


def section(markdown: str, heading: str) -> str:
    """From a heading line up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = markdown.index(f"\n{heading}\n") + 1
    following = re.compile(rf"^#{{1,{level}}} ", re.M)
    match = following.search(markdown, start + len(heading))
    return markdown[start:match.start() if match else len(markdown)]


def runbook_anchors_of_rules() -> dict[str, str]:
    result: dict[str, str] = {}
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_PREFIX), url
        result[rule["alert"]] = url[len(RUNBOOK_PREFIX):]
    return result


def documents() -> list[Path]:
    """The README and every page in docs/."""
    return [README, *sorted((REPO / "docs").glob("*.md"))]


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def yaml_blocks(path: Path) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", read(path), re.S)


def test_github_anchor() -> None:
    assert github_anchor("BinanceFuturesIPBanned") == "binancefuturesipbanned"
    assert github_anchor("More accounts than one IP can carry") == (
        "more-accounts-than-one-ip-can-carry")
    assert github_anchor("Dashboard and alerts") == "dashboard-and-alerts"
    assert github_anchor("`--check-config`: what, why?") == "--check-config-what-why"


def test_section() -> None:
    text = "# A\n\n## B\nb\n### C\nc\n## D\nd\n"
    assert section(text, "## B") == "## B\nb\n### C\nc\n"
    assert section(text, "### C") == "### C\nc\n"
    assert section(text, "## D") == "## D\nd\n"


def test_sections() -> None:
    level_two = [text for level, text in headings(read(README)) if level == 2]
    start = level_two.index("Running in production")
    assert level_two[start:start + 2] == ["Running in production", "Dashboard and alerts"]
    assert "Runbook" not in level_two, "the runbook lives in docs/runbook.md"
    assert [text for level, text in headings(read(RUNBOOK)) if level == 2] == [
        "Dashboard", "Recording rules", "Alerts", "Tuning", "Runbook"]


def test_readme_links_the_moved_sections() -> None:
    readme = read(README)
    assert "](docs/runbook.md)" in section(readme, "## Dashboard and alerts")
    assert "](docs/kubernetes.md)" in section(readme, "### Kubernetes")
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in readme, f"docs/{page.name} is not linked from the README"


def test_one_runbook_heading_per_alert_matching_runbook_urls() -> None:
    expected = runbook_anchors_of_rules()
    runbook = [github_anchor(text) for text in runbook_headings(read(RUNBOOK))]
    assert sorted(runbook) == sorted(expected.values())
    assert len(set(runbook)) == len(runbook)
    # Unique in the whole document too, so GitHub adds no -1 suffix.
    all_anchors = anchors(read(RUNBOOK))
    for alert, anchor in expected.items():
        assert all_anchors.count(anchor) == 1, f"{alert}: anchor {anchor} not unique"


def test_every_runbook_entry_says_what_it_means_and_what_to_do() -> None:
    text = read(RUNBOOK)
    for rule in alert_rules():
        entry = section(text, f"### {rule['alert']}")
        assert "**Meaning:**" in entry, f"{rule['alert']}: no **Meaning:**"
        assert re.search(r"\*\*Act( now)?:\*\*", entry), f"{rule['alert']}: no **Act:**"


def test_portfolio_margin_is_explained_under_auth_errors() -> None:
    entry = section(read(RUNBOOK), "### BinanceFuturesAuthErrors")
    portfolio = " ".join(section(entry, "#### Portfolio Margin accounts").split())
    assert "-2015" in portfolio and "not supported yet" in portfolio


def test_internal_links_resolve() -> None:
    for path in documents():
        text = read(path)
        known = set(anchors(text))
        for target in re.findall(r"\]\(#([^)]+)\)", text):
            assert target in known, f"{path.name}: link to #{target} has no heading"


def test_relative_links_resolve() -> None:
    """Links to repository files, relative to their page: the file exists, and an anchor
    into a Markdown page names one of its headings."""
    for path in documents():
        for target in re.findall(r"\]\(((?!https?:|#|<)[^)\s]+)\)", read(path)):
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve()
            where = f"{path.relative_to(REPO)}: link to {target}"
            assert linked.is_relative_to(REPO) and linked.exists(), f"{where}: no such file"
            if anchor:
                assert linked.suffix == ".md", f"{where}: anchor into a non-Markdown file"
                assert anchor in anchors(read(linked)), f"{where}: no such heading"


def test_every_alert_is_in_the_alert_table() -> None:
    table = section(read(RUNBOOK), "## Alerts")
    for rule in alert_rules():
        assert f"`{rule['alert']}`" in table, f"{rule['alert']} missing from the alerts table"


def test_every_recording_rule_is_in_the_recording_rule_table() -> None:
    table = section(read(RUNBOOK), "## Recording rules")
    for name in recording_rule_names():
        assert f"`{name}`" in table, f"{name} missing from the recording rules table"


def test_yaml_examples_parse() -> None:
    blocks = [block for path in documents() for block in yaml_blocks(path)]
    assert len(blocks) >= 4
    for block in blocks:
        for document in yaml.safe_load_all(block):
            assert document is not None
    kinds = {d["kind"] for block in yaml_blocks(KUBERNETES) for d in yaml.safe_load_all(block)
             if isinstance(d, dict) and "kind" in d}
    assert {"Deployment", "Service", "Secret", "ServiceMonitor"} <= kinds


def test_kubernetes_example_conventions() -> None:
    manifests = [d for block in yaml_blocks(KUBERNETES)
                 for d in yaml.safe_load_all(block) if isinstance(d, dict) and "kind" in d]
    by_kind = {d["kind"]: d for d in manifests}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    secret_volumes = [v["name"] for v in pod["volumes"] if "secret" in v]
    assert secret_volumes and all(mounts[name]["readOnly"] is True for name in secret_volumes)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    annotations = by_kind["Service"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "10317"
    endpoint = by_kind["ServiceMonitor"]["spec"]["endpoints"][0]
    assert endpoint["port"] == container["ports"][0]["name"]
    assert "/metrics" not in str(container.get("livenessProbe"))
