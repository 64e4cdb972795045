"""Great Expectations Data Docs that read offline.

GX's HTML loads Bootstrap, jQuery, Font Awesome, bootstrap-table, a date picker and Vega from CDNs, and its
index page draws its tables with bootstrap-table in the browser. Offline that gives unstyled pages and an
empty index. We build the docs with GX, then:

* copy Bootstrap 4.5, jQuery 3.7 and Font Awesome 6.6 from their PyPI packages (``xstatic-bootstrap``,
  ``xstatic-jquery``, ``fontawesomefree``) into ``static/vendor`` and point every page at them;
* drop the tags for the browser-side widgets that have no PyPI package (bootstrap-table and its filter
  control, the date picker, Vega, the dark theme); validation pages are rendered on the server and don't
  need them;
* replace the index with a static page (no JavaScript) that links every suite and validation page and shows
  the run's rows-failed-per-rule summary.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import shutil
from pathlib import Path

VENDOR = "static/vendor"


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise RuntimeError(f"{module} is not installed; it ships the Data Docs assets (see pyproject.toml)")
    return Path(spec.origin).parent


def vendor_assets(docs_dir: Path) -> dict[str, str]:
    """Copy the offline assets into ``docs_dir/static/vendor``; return CDN-URL pattern -> local path."""
    target = docs_dir / VENDOR
    bootstrap = _package_dir("xstatic.pkg.bootstrap") / "data"
    jquery = _package_dir("xstatic.pkg.jquery") / "data"
    fontawesome = _package_dir("fontawesomefree") / "static" / "fontawesomefree"
    copies = {
        bootstrap / "css" / "bootstrap.min.css": target / "bootstrap" / "bootstrap.min.css",
        bootstrap / "js" / "bootstrap.bundle.min.js": target / "bootstrap" / "bootstrap.bundle.min.js",
        jquery / "jquery.min.js": target / "jquery" / "jquery.min.js",
        fontawesome / "css" / "all.min.css": target / "fontawesome" / "css" / "all.min.css",
    }
    for source, dest in copies.items():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    shutil.copytree(fontawesome / "webfonts", target / "fontawesome" / "webfonts", dirs_exist_ok=True)
    url = r"[^\"']+"
    return {
        rf"https://maxcdn\.bootstrapcdn\.com/bootstrap/{url}/bootstrap\.min\.css": f"{VENDOR}/bootstrap/bootstrap.min.css",  # noqa: E501
        rf"https://stackpath\.bootstrapcdn\.com/bootstrap/{url}/bootstrap\.min\.js": f"{VENDOR}/bootstrap/bootstrap.bundle.min.js",  # noqa: E501
        rf"https://code\.jquery\.com/jquery-{url}\.min\.js": f"{VENDOR}/jquery/jquery.min.js",
        rf"https://cdnjs\.cloudflare\.com/ajax/libs/font-awesome/{url}/all\.min\.css": f"{VENDOR}/fontawesome/css/all.min.css",  # noqa: E501
    }


# A <script src=...></script> or <link href=...> tag whose URL is remote.
_REMOTE_TAG = re.compile(
    r"<script[^>]*\ssrc=[\"'](https?://[^\"']+)[\"'][^>]*>\s*</script>|<link[^>]*\shref=[\"'](https?://[^\"']+)[\"'][^>]*/?>",
    re.IGNORECASE,
)


def make_page_offline(page: Path, docs_dir: Path, local: dict[str, str]) -> None:
    """Point a page's remote CSS/JS at the vendored copies; remove the tags that have none."""
    prefix = os.path.relpath(docs_dir, page.parent).replace(os.sep, "/")

    def replace(match: re.Match) -> str:
        url = match.group(1) or match.group(2)
        for pattern, path in local.items():
            if re.fullmatch(pattern, url):
                tag = re.sub(r"\s(integrity|crossorigin)=[\"'][^\"']*[\"']", "", match.group(0))
                return tag.replace(url, f"{prefix}/{path}")
        return ""

    text = page.read_text(encoding="utf-8")
    page.write_text(_REMOTE_TAG.sub(replace, text), encoding="utf-8")


def remote_assets(page: Path) -> list[str]:
    """Remote CSS/JS a page would load (empty once offline)."""
    return [m.group(1) or m.group(2) for m in _REMOTE_TAG.finditer(page.read_text(encoding="utf-8"))]


def write_index(docs_dir: Path, summary: dict) -> Path:
    """A static index (no JavaScript) of every page, with the run's rows-failed-per-rule table."""
    pages = sorted(p.relative_to(docs_dir).as_posix() for p in docs_dir.rglob("*.html") if p.name != "index.html")
    suites = [p for p in pages if p.startswith("expectations/")]
    validations = [p for p in pages if p.startswith("validations/")]
    rows = []
    for table, result in summary["tables"].items():
        failed = ", ".join(f"{html.escape(rule)}: {n:,}" for rule, n in result["failed_by_rule"].items()) or "none"
        rows.append(
            f"<tr><td>{html.escape(table)}</td><td>{result['rows_in']:,}</td><td>{result['clean']:,}</td>"
            f"<td>{result['quarantined']:,}</td><td>{failed}</td></tr>"
        )
    status = "passed" if summary["passed"] else "FAILED"

    def links(items: list[str]) -> str:
        return "".join(f'<li><a href="{html.escape(p)}">{html.escape(p)}</a></li>' for p in items)

    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Validation {html.escape(summary["dataset"])} {summary["date"]}</title>
<link rel="stylesheet" href="{VENDOR}/bootstrap/bootstrap.min.css"></head>
<body class="container my-4">
<h1>Validation of {html.escape(summary["dataset"])} on {summary["date"]}: {status}</h1>
<p>{summary["rows_in"]:,} rows in, {summary["clean"]:,} clean, {summary["quarantined"]:,} quarantined
({summary["quarantined_share"]:.4%}; threshold {summary["threshold"]:.2%});
suite version {summary["suite_version"]}.</p>
<table class="table table-sm table-striped"><thead><tr><th>table</th><th>rows in</th>
<th>clean</th><th>quarantined</th><th>rows failed per rule</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
<h2>Expectation suites</h2><ul>{links(suites)}</ul>
<h2>Validation results</h2><ul>{links(validations)}</ul>
</body></html>
"""
    index = docs_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def build_offline_docs(context, docs_dir: Path, summary: dict) -> Path:
    """Build GX Data Docs for the context's validation results into ``docs_dir`` and make them offline.

    Returns:
        The index page.
    """
    if docs_dir.exists():
        shutil.rmtree(docs_dir)
    docs_dir.mkdir(parents=True)
    site = "coldstart_offline"
    context.add_data_docs_site(
        site,
        {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    context.build_data_docs(site_names=[site])
    local = vendor_assets(docs_dir)
    for page in docs_dir.rglob("*.html"):
        make_page_offline(page, docs_dir, local)
    return write_index(docs_dir, summary)
