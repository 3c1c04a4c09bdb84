"""Data commands: import, accounts, curate, show."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from tweetlm.cli.app import app, console, err_console
from tweetlm.curate import REPORT_LABELS, SWITCHES, CurateConfig, CurationReport, curate_account, mixed_languages
from tweetlm.errors import InputError
from tweetlm.store import Dataset, Store, input_hash


@app.command("import", rich_help_panel="Data")
def import_(
    path: Path = typer.Argument(
        ..., readable=False, help="An X archive (.zip, folder or tweets.js), CSV, JSONL or text file."
    ),
    account: str | None = typer.Option(
        None, "--account", "-a", help="Account name to file the posts under (default: from the data)."
    ),
    fmt: str | None = typer.Option(None, "--format", "-f", help="x-archive, csv, jsonl or text (default: detected)."),
    text_column: str | None = typer.Option(None, "--text-column", help="CSV: the column that holds the text."),
    encoding: str | None = typer.Option(None, "--encoding", help="CSV/text encoding (default: UTF-8, detected)."),
    delimiter: str | None = typer.Option(
        None, "--delimiter", help="CSV: the field delimiter, e.g. ';' or tab (default: read from the header row)."
    ),
    max_size: float = typer.Option(
        2048, "--max-size", min=0, help="Refuse a file, or a member of an archive, bigger than this many MB."
    ),
) -> None:
    """Import posts from a file into the store. Importing the same file twice adds nothing.

    Examples:

      tweetlm import twitter-2024-01-01.zip

      tweetlm import ../shared/data/fivethirtyeight/BarackObama.csv --account BarackObama

      tweetlm import posts.csv --text-column body --account me

      tweetlm import export.csv --delimiter ';'
    """
    from tweetlm.sources import ReadOptions, check_path, resolve

    max_bytes = int(max_size * 1024 * 1024)
    check_path(path, max_bytes)
    source = resolve(path, fmt)
    options = ReadOptions(
        account=_account_option(account),
        text_column=text_column,
        encoding=encoding,
        delimiter=_delimiter_option(delimiter),
        max_bytes=max_bytes,
    )
    with Store() as store, console.status(f"importing {path.name} ({source.name})"):
        result = store.import_posts(
            source.read(path, options), source=source.name, path=str(path.resolve()), file_hash=input_hash(path)
        )
    who = ", ".join(result.accounts) or "no account"
    console.print(
        f"imported [bold]{result.read}[/] posts of {who} from {path.name} ({source.name}): "
        f"[green]{result.added} new[/], {result.skipped} already in the store"
    )
    if result.accounts:
        console.print(f"next: tweetlm curate {result.accounts[0]}")


def _account_option(account: str | None) -> str | None:
    """--account without its @; an empty name (`--account ''` or `@`) is refused, not ignored."""
    if account is None:
        return None
    name = account.strip().lstrip("@").strip()
    if not name:
        raise InputError(f"--account {account!r} is empty: give the name to file the posts under, or leave it out")
    if any(not ch.isprintable() for ch in name):
        raise InputError(f"--account {account!r} holds control characters: give a plain name")
    return name


def _delimiter_option(delimiter: str | None) -> str | None:
    if delimiter is None:
        return None
    value = {"tab": "\t", "\\t": "\t"}.get(delimiter.lower(), delimiter)
    if len(value) != 1 or value in '"\r\n' or value.isalnum():
        raise InputError(f"--delimiter {delimiter!r}: give one character such as ',' ';' '|' or 'tab'")
    return value


@app.command("accounts", rich_help_panel="Data")
def accounts() -> None:
    """List the accounts in the store: platform, posts, last import, latest curated dataset.

    Example:

      tweetlm accounts
    """
    with Store(create=False) as store:
        rows = store.accounts()
        datasets = {a.account: store.dataset(a.account, with_posts=False) for a in rows}
    if not rows:
        console.print("the store is empty: run `tweetlm import PATH` or `tweetlm fetch PLATFORM ACCOUNT`")
        return
    table = Table("account", "platform", "posts", "last import", "curated", title=f"accounts in {store.path}")
    for row in rows:
        ds = datasets.get(row.account)
        table.add_row(
            row.account,
            row.platform,
            str(row.posts),
            row.last_import or "-",
            f"{ds.n_posts} ({ds.hash})" if ds else "-",
        )
    console.print(table)


def report_table(report: CurationReport, title: str, show_examples: int = 0) -> Table:
    table = Table(title=title)
    table.add_column("")
    table.add_column("posts", justify="right")
    table.add_column("share", justify="right")
    if show_examples:
        table.add_column("examples of what the rule dropped", overflow="fold")
    total = max(report.downloaded, 1)
    for key, count in report.rows():
        if key not in ("downloaded", "kept") and count == 0:
            continue
        cells: list[str | Text] = [REPORT_LABELS[key], str(count), f"{100 * count / total:.1f}%"]
        if show_examples:
            cells.append(Text("\n".join(f"• {t[:140]}" for t in report.examples.get(key, [])[:show_examples])))
        style = "bold green" if key == "kept" else ("bold" if key == "downloaded" else None)
        table.add_row(*cells, style=style)
    return table


@app.command("curate", rich_help_panel="Data")
def curate(
    account: str = typer.Argument(..., help="Account to curate (see `tweetlm accounts`)."),
    keep_retweets: bool = typer.Option(False, "--keep-retweets", help="Keep retweets (dropped by default)."),
    drop_replies: bool = typer.Option(False, "--drop-replies/--keep-replies", help="Drop replies to others."),
    drop_quotes: bool = typer.Option(False, "--drop-quotes/--keep-quotes", help="Drop quote posts."),
    lang: str | None = typer.Option(
        None, "--lang", help="Keep only this language (e.g. en, ja): the platform's, else detected (py3langid)."
    ),
    keep_urls: bool = typer.Option(False, "--keep-urls", help="Keep links (removed by default)."),
    strip_mentions: bool = typer.Option(False, "--strip-mentions", help="Strip leading @mentions."),
    keep_newlines: bool = typer.Option(False, "--keep-newlines", help="Keep line breaks (default: spaces)."),
    min_words: int = typer.Option(
        3,
        "--min-words",
        min=0,
        help="Drop posts with fewer words (not @, #, links); in Chinese, Japanese, Thai, Lao, Khmer and Myanmar "
        "each letter counts as a word (switch off with --off by-script).",
    ),
    keep_duplicates: bool = typer.Option(False, "--keep-duplicates", help="Keep exact duplicates."),
    no_fix_text: bool = typer.Option(False, "--no-fix-text", help="Do not unescape entities or repair mojibake."),
    off: list[str] = typer.Option(
        [], "--off", help=f"Switch rules off by name, comma-separated or repeated: {', '.join(SWITCHES)}."
    ),
    show_dropped: int = typer.Option(2, "--show-dropped", min=0, help="Examples to show of what each rule dropped."),
) -> None:
    """Clean an account's posts into a versioned training set and print what was kept and why.

    Examples:

      tweetlm curate BarackObama

      tweetlm curate me --drop-replies --strip-mentions --lang en --show-dropped 5

      tweetlm curate me --off automated,leftovers
    """
    config = CurateConfig(
        drop_retweets=not keep_retweets,
        drop_replies=drop_replies,
        drop_quotes=drop_quotes,
        lang=lang,
        fix_text=not no_fix_text,
        remove_urls=not keep_urls,
        strip_mentions=strip_mentions,
        keep_newlines=keep_newlines,
        min_words=min_words,
        drop_duplicates=not keep_duplicates,
    ).without(name for names in off for name in names.split(",") if name.strip())
    with Store(create=False) as store:
        dataset, report = curate_account(store, account, config, examples=max(show_dropped, 3), with_posts=False)
    print_curation(dataset, report, show_dropped)


def print_curation(dataset: Dataset, report: CurationReport, show_examples: int = 2) -> None:
    console.print(report_table(report, f"curation of {dataset.account}", show_examples))
    console.print(f"languages kept: {report.language_mix()}", highlight=False)
    if warning := mixed_languages(dataset):
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(
        f"dataset [bold]{dataset.hash}[/]: {dataset.n_posts} posts ready for `tweetlm train {dataset.account}`"
    )


@app.command("show", rich_help_panel="Data")
def show(
    account: str = typer.Argument(..., help="Account to show."),
    curated: bool = typer.Option(False, "--curated", help="Show the latest curated dataset instead of raw posts."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many posts to show."),
) -> None:
    """Show an account's stored posts, or its curated training set.

    Examples:

      tweetlm show BarackObama -n 5

      tweetlm show BarackObama --curated
    """
    with Store(create=False) as store:
        name = store.resolve_account(account)
        if curated:
            dataset = store.dataset(name)
            if dataset is None:
                raise InputError(f"{name} has not been curated yet: run `tweetlm curate {name}`")
            table = Table("#", "post id", "text", title=f"{name}: curated dataset {dataset.hash}")
            for i, post in enumerate(dataset.posts[:limit], 1):
                table.add_row(str(i), post.post_id, Text(post.text))
        else:
            table = Table("#", "date", "kind", "text", title=f"{name}: stored posts")
            for i, p in enumerate(store.iter_posts(name), 1):
                if i > limit:
                    break
                date = p.created_at.strftime("%Y-%m-%d") if p.created_at else "-"
                table.add_row(str(i), date, p.kind.value, Text(p.text))
    console.print(table)
