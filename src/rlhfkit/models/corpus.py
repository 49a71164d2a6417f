"""Deterministic English-like corpora for the built-in model and the demo tasks.

Three kinds of documents, generated from the templates in ``builtin_data/``: reviews whose
sentiment (-2..2), length (1-4 sentences) and helpfulness (a concrete "because" reason or not)
vary independently; questions with short answers that do or do not explain; news passages with
one-sentence summaries. The lexicon measures the demo tasks reuse live here too:
:func:`sentiment_score` and :func:`gives_reason`.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import itertools
import random
import re
import string
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).with_name("builtin_data")
DATA_FILES = ("lexicon.yaml", "reviews.yaml", "qa.yaml", "summaries.yaml")
SENTIMENT_LEVELS = (-2, -1, 0, 1, 2)
LEVEL_WEIGHT = {2: 1.0, 1: 0.5, 0: 0.0, -1: -0.5, -2: -1.0}
TASKS = ("review", "qa", "summary")
DEFAULT_MIX: Mapping[str, float] = {"review": 0.65, "qa": 0.2, "summary": 0.15}
SPLITS = ("train", "heldout", "all")
HELDOUT_BUCKETS = 8
NEGATION_WINDOW = 3
CLEARLY_POSITIVE_POLARITY = 0.25  # sentiment_score at which a review reads clearly positive
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|[.!?;,]")
_SCOPE_BREAKS = frozenset({".", "!", "?", ";", ",", "but", "although", "while"})
_SENTENCE = re.compile(r"[^.!?]*[A-Za-z0-9][^.!?]*[.!?]+")
_FORMATTER = string.Formatter()


@dataclass(frozen=True)
class Document:
    """One example: the ``prompt`` a task shows and the ``completion`` the model should write."""

    task: str
    prompt: str
    completion: str
    labels: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def text(self) -> str:
        """Prompt and completion joined, as the language model sees them (without EOS)."""
        return self.prompt + self.completion


@functools.lru_cache(maxsize=None)
def _data(name: str) -> dict[str, Any]:
    import yaml

    path = DATA_DIR / name
    with open(path, encoding="utf-8") as handle:
        data = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def corpus_fingerprint() -> str:
    """SHA-256 over this module's source and the template files: changes whenever the corpus can."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for name in DATA_FILES:
        digest.update(name.encode())
        digest.update((DATA_DIR / name).read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- lexicon measures


@dataclass(frozen=True)
class Lexicon:
    """Word weights in [-1, 1], negation words and reason markers of the corpus."""

    weights: Mapping[str, float]
    negations: frozenset[str]
    reason_markers: frozenset[str]


@functools.lru_cache(maxsize=1)
def lexicon() -> Lexicon:
    """The lexicon from ``lexicon.yaml``; a word listed with two different weights is an error."""
    raw = _data("lexicon.yaml")
    weights: dict[str, float] = {}

    def add(word: str, weight: float, where: str) -> None:
        key = str(word).lower()
        if key in weights and weights[key] != weight:
            raise ValueError(f"{DATA_DIR / 'lexicon.yaml'}: word {key!r} at {where} has weight {weight}, "
                             f"but {weights[key]} elsewhere")
        weights[key] = weight

    for scale, levels in raw["scales"].items():
        for level, words in levels.items():
            for word in words:
                add(word, LEVEL_WEIGHT[int(level)], f"scales.{scale}.{level}")
    for word, weight in raw["extra"].items():
        add(word, float(weight), "extra")
    return Lexicon(weights=weights, negations=frozenset(map(str, raw["negations"])),
                   reason_markers=frozenset(map(str, raw["reason_markers"])))


def sentiment_score(text: str) -> float:
    """Lexicon polarity of ``text`` in (-1, 1): sum of word weights / (number of opinion words + 1).

    A negation (not, never, no, ...n't) up to three words before an opinion word flips its weight
    and halves it ("not great" = -0.5), the "shift" negation of Taboada et al. (2011),
    Lexicon-Based Methods for Sentiment Analysis. The +1 pulls texts with few opinion words toward 0.
    """
    lex = lexicon()
    total, count, scope = 0.0, 0, 0
    for token in _TOKEN.findall(text.lower()):
        if token in _SCOPE_BREAKS:
            scope = 0
            continue
        if token in lex.negations or token.endswith("n't"):
            scope = NEGATION_WINDOW
            continue
        weight = lex.weights.get(token, 0.0)
        if weight:
            total += -0.5 * weight if scope else weight
            count += 1
        scope = max(0, scope - 1)
    return total / (count + 1)


@functools.lru_cache(maxsize=1)
def strong_alternatives() -> Mapping[str, tuple[str, ...]]:
    """Each lukewarm or negative adjective of the lexicon's scales (levels 0 to -2) -> the strongly positive
    words that fit most of the scales it is on, and each one-word negative review verb -> the loving verbs of
    its tense: what an editor asked for a positive review swaps in ("The tea was okay" -> "... superb")."""
    scales: dict[str, list[tuple[str, ...]]] = {}
    for levels in _data("lexicon.yaml")["scales"].values():
        strong = tuple(map(str, levels[2]))
        for level in (0, -1, -2):
            for word in levels.get(level, []):
                scales.setdefault(str(word).lower(), []).append(strong)
    out: dict[str, tuple[str, ...]] = {}
    for word, options in scales.items():
        fits = collections.Counter(w for strong in options for w in strong)
        most = max(fits.values())
        out[word] = tuple(w for w, count in fits.items() if count == most)
    for forms in _data("reviews.yaml")["verbs"].values():
        for level in (-1, -2):
            for verb in forms[level]:
                if " " not in verb:
                    out.setdefault(verb, tuple(forms[2]))
    return out


@functools.lru_cache(maxsize=1)
def strong_closers() -> tuple[str, ...]:
    """The corpus's strongly positive closing lines that fit any review as they are ("Highly recommended.")."""
    data = _data("reviews.yaml")
    return tuple(line for line in [*data["closers"][2], *data["overall"][2]] if "{" not in line)


def gives_reason(text: str) -> bool:
    """Whether ``text`` states a reason with an explicit marker ("because", "since")."""
    markers = lexicon().reason_markers
    return any(token in markers for token in _TOKEN.findall(text.lower()))


def sentence_count(text: str) -> int:
    """Number of sentences (runs ending in . ! or ?); unterminated non-empty text counts as one."""
    found = len(_SENTENCE.findall(text))
    tail = _SENTENCE.sub("", text)
    return found + (1 if re.search(r"[A-Za-z0-9]", tail) else 0)


# ---------------------------------------------------------------- shared helpers


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _in_split(key: str, split: str) -> bool:
    """Stable 1-in-8 hold-out by CRC32 of ``key`` (Python's hash() is salted per process)."""
    heldout = zlib.crc32(key.encode("utf-8")) % HELDOUT_BUCKETS == 0
    return split == "all" or heldout == (split == "heldout")


def _fill(template: str, values: Mapping[str, str]) -> str:
    """``str.format`` where ``{Key}`` is ``values["key"]`` with its first letter capitalized."""
    full = dict(values)
    for key, value in values.items():
        full.setdefault(key[:1].upper() + key[1:], value[:1].upper() + value[1:])
    return template.format_map(full)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fields(template: str) -> list[str]:
    return [name for _, name, _, _ in _FORMATTER.parse(template) if name]


def _rng(seed: int, task: str) -> random.Random:
    return random.Random(f"rlhfkit-corpus-{task}-{seed}")


# ---------------------------------------------------------------- reviews


@dataclass(frozen=True)
class Subject:
    """Something to review: its domain, prompt name, aspects and how the text refers to it."""

    domain: str
    name: str
    aspects: tuple[str, ...]
    this: str
    this_plural: bool = False

    @property
    def prompt(self) -> str:
        """The review prompt, e.g. ``"Review of the Blue Fork cafe:"``."""
        return f"Review of {self.name}:"


@functools.lru_cache(maxsize=1)
def review_subjects() -> tuple[Subject, ...]:
    """Every reviewable subject, in a fixed order (domain by domain, name patterns expanded)."""
    domains = _data("reviews.yaml")["domains"]
    subjects: list[Subject] = []
    for domain, spec in domains.items():
        names = spec["names"]
        for pattern in names["patterns"]:
            keys = _fields(pattern)
            pools = [list(spec["kinds"]) if key == "kind" else list(spec["products"]) if key == "product"
                     else names[key] for key in keys]
            for combo in itertools.product(*pools):
                values = dict(zip(keys, map(str, combo)))
                subjects.append(_make_subject(domain, spec, pattern.format(**values), values))
    return tuple(subjects)


def _make_subject(domain: str, spec: Mapping[str, Any], name: str, values: Mapping[str, str]) -> Subject:
    shared = tuple(spec.get("shared_aspects", ()))
    if "kind" in values:
        return Subject(domain, name, tuple(spec["kinds"][values["kind"]]) + shared, spec["this"])
    if "product" in values:
        product = spec["products"][values["product"]]
        plural = bool(product.get("plural", False))
        this = f"these {values['product']}" if plural else spec["this"].format(product=values["product"])
        return Subject(domain, name, tuple(product["aspects"]) + shared, this, plural)
    return Subject(domain, name, shared, spec["this"])


def _subjects_by_domain(split: str) -> dict[str, list[Subject]]:
    _check_split(split)
    pools: dict[str, list[Subject]] = {}
    for subject in review_subjects():
        if _in_split(f"{subject.domain}|{subject.name}", split):
            pools.setdefault(subject.domain, []).append(subject)
    return pools


class _SubjectSampler:
    """Draws subjects by domain weight, each domain's pool shuffled and cycled (few repeats)."""

    def __init__(self, rng: random.Random, split: str) -> None:
        self.rng = rng
        self.pools = _subjects_by_domain(split)
        weights = {name: float(spec["weight"]) for name, spec in _data("reviews.yaml")["domains"].items()}
        self.domains = sorted(self.pools)
        self.weights = [weights[name] for name in self.domains]
        self.queues: dict[str, list[Subject]] = {}

    def __next__(self) -> Subject:
        domain = self.rng.choices(self.domains, weights=self.weights)[0]
        queue = self.queues.get(domain)
        if not queue:
            queue = self.queues[domain] = self.rng.sample(self.pools[domain], len(self.pools[domain]))
        return queue.pop()


_PLANS: dict[int, list[tuple[str, ...]]] = {
    1: [("aspect",), ("overall",)],
    2: [("overall", "aspect"), ("aspect", "closer"), ("aspect", "aspect"), ("context", "aspect"), ("aspect", "overall")],
    3: [("overall", "aspect", "aspect"), ("aspect", "aspect", "closer"), ("context", "aspect", "closer"),
        ("overall", "aspect", "closer"), ("context", "overall", "aspect")],
    4: [("context", "overall", "aspect", "aspect"), ("overall", "aspect", "aspect", "closer"),
        ("aspect", "aspect", "aspect", "closer"), ("context", "aspect", "aspect", "closer")],
}


class _ReviewWriter:
    """Writes one review of a subject at a sentiment level, length and helpfulness."""

    def __init__(self, rng: random.Random, subject: Subject) -> None:
        data = _data("reviews.yaml")
        self.rng = rng
        self.subject = subject
        self.templates = data["templates"]
        self.adverbs = data["adverbs"]
        self.verbs = data["verbs"]
        self.overall = data["overall"]
        self.closers = data["closers"]
        self.domain = data["domains"][subject.domain]
        self.scales = _data("lexicon.yaml")["scales"]
        self.past = self.domain["tense"] == "past"
        self.unused = rng.sample(subject.aspects, len(subject.aspects))

    def forms(self, plural: bool) -> dict[str, str]:
        """Agreement words for an aspect (or the subject): it/they, was/were or is/are, has/have."""
        was = ("were" if plural else "was") if self.past else ("are" if plural else "is")
        return {"it": "they" if plural else "it", "was": was, "has": "have" if plural else "has",
                "does": "do" if plural else "does", "think": "thought" if self.past else "think",
                "find": "found" if self.past else "find"}

    def subject_values(self) -> dict[str, str]:
        this_was = self.forms(self.subject.this_plural)["was"]
        return {"this": self.subject.this, "this_was": this_was, "It_was": f"It {self.forms(False)['was']}",
                "again": self.rng.choice(self.domain["again"])}

    def pick(self, options: Sequence[str]) -> str:
        return self.rng.choice(list(options))

    def next_aspect(self) -> str:
        if not self.unused:
            self.unused = self.rng.sample(self.subject.aspects, len(self.subject.aspects))
        return self.unused.pop()

    def aspect_values(self, key: str, level: int, suffix: str = "") -> dict[str, str]:
        spec = self.domain["aspects"][key]
        plural = bool(spec.get("plural", False))
        values = {**self.forms(plural), "the_aspect": f"the {key}", "adj": self.pick(self.scales[spec["scale"]][level])}
        if level:
            values["adv"] = self.pick(self.adverbs["strong" if abs(level) == 2 else "mild"])
            values["verb"] = self.pick(self.verbs["past" if self.past else "present"][level])
            values["reason"] = self.reason(spec, level > 0, plural)
        return {(name + suffix if name in ("the_aspect", "adj", "was", "reason") else name): value
                for name, value in values.items()}

    def reason(self, spec: Mapping[str, Any], positive: bool, plural: bool) -> str:
        """A reason clause of the right polarity: the aspect's own, or (40%) its domain's generic one."""
        side = "pos" if positive else "neg"
        options = list(spec[side])
        generic = self.domain.get("generic", {}).get(spec["scale"]) if spec.get("generic") != "none" else None
        if generic and self.rng.random() < 0.4:
            options = generic[side]
        return _fill(self.pick(options), self.forms(plural))

    def aspect_sentence(self, level: int, reasoned: bool) -> str:
        key = self.next_aspect()
        values = self.aspect_values(key, level)
        kind = "reasoned" if reasoned and level else "plain"
        person = bool(self.domain["aspects"][key].get("person", False))
        templates = [t for t in self.templates[kind] if (level or ("{adv}" not in t and "{verb}" not in t))
                     and not (person and "{it}" in t)]
        return _fill(self.pick(templates), values)

    def mixed_sentence(self, first_level: int, second_level: int, reasoned: bool) -> str:
        values = self.aspect_values(self.next_aspect(), first_level)
        values.update(self.aspect_values(self.next_aspect(), second_level, suffix="2"))
        return _fill(self.pick(self.templates["mixed_reasoned" if reasoned else "mixed_plain"]), values)

    def aspect_level(self, level: int) -> int:
        sign = 1 if level > 0 else -1
        if abs(level) == 2:
            return sign * (2 if self.rng.random() < 0.7 else 1)
        return sign * self.rng.choices((1, 2, 0), weights=(0.75, 0.1, 0.15))[0]

    def opinion(self, level: int, reasoned: bool, first: bool) -> str:
        if level == 0:
            if first or self.rng.random() < 0.5:
                positive_first = self.rng.random() < 0.5
                return self.mixed_sentence(1 if positive_first else -1, -1 if positive_first else 1, reasoned)
            return self.aspect_sentence(0, False)
        sub_level = self.aspect_level(level)
        if reasoned and sub_level == 0:
            sub_level = level
        return self.aspect_sentence(sub_level, reasoned)

    def write(self, level: int, n_sentences: int, helpful: bool) -> str:
        plans = _PLANS[n_sentences]
        plan = ("aspect",) if n_sentences == 1 and helpful else self.pick(plans)
        sentences: list[str] = []
        aspects_done = 0
        values = self.subject_values()
        for part in plan:
            if part == "aspect":
                reasoned = helpful and (aspects_done == 0 or self.rng.random() < 0.4)
                sentences.append(self.opinion(level, reasoned, aspects_done == 0))
                aspects_done += 1
            elif part == "overall":
                extra = self.domain["best"] if level == 2 else self.domain["worst"] if level == -2 else []
                sentences.append(_fill(self.pick(list(self.overall[level]) + list(extra)), values))
            elif part == "closer":
                sentences.append(_fill(self.pick(self.closers[level]), values))
            else:
                sentences.append(self.pick(self.domain["context"]))
        return " ".join(_sentence(s) for s in sentences)


def generate_reviews(n: int, seed: int = 0, split: str = "train") -> list[Document]:
    """``n`` reviews with uniform sentiment level, length 1-4 and helpfulness, drawn independently."""
    rng = _rng(seed, "review")
    subjects = _SubjectSampler(rng, split)
    documents = []
    for _ in range(n):
        subject = next(subjects)
        level = rng.choice(SENTIMENT_LEVELS)
        n_sentences = rng.randint(1, 4)
        helpful = rng.random() < 0.5
        text = _ReviewWriter(rng, subject).write(level, n_sentences, helpful)
        labels = {"sentiment": level, "sentences": n_sentences, "helpful": helpful,
                  "domain": subject.domain, "subject": subject.name}
        documents.append(Document("review", subject.prompt, " " + text, labels))
    return documents


def demo_prompts(n: int, seed: int = 0, split: str = "heldout") -> list[str]:
    """``n`` review prompts ("Review of ...:") for tasks; by default subjects held out of training.

    Subjects are drawn by domain weight from shuffled pools, so a subject repeats only after its
    domain's pool is used up.
    """
    subjects = _SubjectSampler(_rng(seed, "demo-prompts"), split)
    return [next(subjects).prompt for _ in range(n)]


# ---------------------------------------------------------------- questions and answers

_QA_FORMS = {"concise": 0.35, "padded": 0.2, "vague": 0.2, "rambling": 0.12, "circular": 0.13}
_HELPFUL_FORMS = ("concise", "padded")


def _questions(split: str) -> list[Mapping[str, Any]]:
    _check_split(split)
    return [item for item in _data("qa.yaml")["questions"] if _in_split(f"qa|{item['q']}", split)]


def qa_prompt(question: str) -> str:
    """The prompt format of the question-answer task."""
    return f"Q: {question}\nA:"


def generate_qa(n: int, seed: int = 0, split: str = "train", forms: Sequence[str] | None = None) -> list[Document]:
    """``n`` question/answer documents; answer forms drawn from ``forms`` (default: all, weighted)."""
    rng = _rng(seed, "qa")
    questions = _questions(split)
    answers = _data("qa.yaml")["answers"]
    names = list(forms) if forms is not None else list(_QA_FORMS)
    unknown = [name for name in names if name not in _QA_FORMS]
    if unknown:
        raise ValueError(f"unknown answer forms {unknown}; choose from {list(_QA_FORMS)}")
    weights = [_QA_FORMS[name] for name in names]
    documents = []
    for _ in range(n):
        item = rng.choice(questions)
        form = rng.choices(names, weights=weights)[0]
        answer = _fill(rng.choice(answers[form]), {"reason": rng.choice(item["r"])})
        labels = {"form": form, "helpful": form in _HELPFUL_FORMS, "question": item["q"]}
        documents.append(Document("qa", qa_prompt(item["q"]), " " + answer, labels))
    return documents


def qa_examples(n: int, seed: int = 0, split: str = "all") -> list[Document]:
    """``n`` questions whose completion is a concise reference answer (for tasks and evaluation)."""
    return generate_qa(n, seed, split, forms=("concise",))


# ---------------------------------------------------------------- passages and summaries

_SUMMARY_QUALITY = {"reference": 0.75, "lead": 0.12, "vague": 0.13}


def summary_prompt(passage: str) -> str:
    """The prompt format of the summary task."""
    return f"Passage: {passage}\nSummary:"


def _town(rng: random.Random, slots: Mapping[str, Any]) -> str:
    return rng.choice(slots["town_prefix"]) + rng.choice(slots["town_suffix"])


def _summary_values(rng: random.Random, slots: Mapping[str, Any], event: Mapping[str, Any]) -> dict[str, str]:
    town = _town(rng, slots)
    town2 = town
    while town2 == town:
        town2 = _town(rng, slots)
    values = {"town": town, "town2": town2, "day": rng.choice(slots["day"]), "num": rng.choice(slots["num"]),
              "person": f"{rng.choice(slots['first'])} {rng.choice(slots['last'])}"}
    for name, options in event["slots"].items():
        values[name] = str(rng.choice(options))
    if "mascot" in values:
        values["mascot2"] = rng.choice([m for m in event["slots"]["mascot"] if m != values["mascot"]])
    return values


def _passage_iter(rng: random.Random, split: str) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """Yields (passage, reference summary, lead sentence, values) for passages in ``split``."""
    data = _data("summaries.yaml")
    slots, events = data["slots"], data["events"]
    names = sorted(events)
    while True:
        name = rng.choice(names)
        event = events[name]
        values = _summary_values(rng, slots, event)
        if not _in_split(f"summary|{name}|{values['town']}", split):
            continue
        chosen = rng.sample(event["details"], rng.choice((2, 2, 3)))
        body = [_fill(sentence, values) for sentence, _ in chosen]
        rng.shuffle(body)
        if rng.random() < 0.35:
            body.insert(rng.randint(0, len(body)), rng.choice(data["fillers"]))
        lead = _fill(rng.choice(event["lead"]), values)
        summary = _fill(event["summary"], {**values, "clause": _fill(chosen[0][1], values)})
        yield " ".join([lead, *body]), _sentence(summary), lead, {"event": name, **values}


def generate_summaries(n: int, seed: int = 0, split: str = "train", reference_only: bool = False) -> list[Document]:
    """``n`` passage/summary documents; most summaries are the reference, some lazy (lead or vague)."""
    _check_split(split)
    rng = _rng(seed, "summary")
    vague = _data("summaries.yaml")["vague"]
    passages = _passage_iter(rng, split)
    documents = []
    for _ in range(n):
        passage, reference, lead, values = next(passages)
        quality = "reference" if reference_only else rng.choices(list(_SUMMARY_QUALITY), weights=list(_SUMMARY_QUALITY.values()))[0]
        summary = {"reference": reference, "lead": lead, "vague": _fill(rng.choice(vague), values)}[quality]
        labels = {"quality": quality, "reference": reference, "event": values["event"]}
        documents.append(Document("summary", summary_prompt(passage), " " + summary, labels))
    return documents


def summary_examples(n: int, seed: int = 0, split: str = "heldout") -> list[Document]:
    """``n`` passages with their reference summary as completion (held-out combinations by default)."""
    return generate_summaries(n, seed, split, reference_only=True)


# ---------------------------------------------------------------- the training corpus


def build_corpus(n_docs: int, seed: int = 0, mix: Mapping[str, float] = DEFAULT_MIX,
                 split: str = "train") -> list[Document]:
    """A shuffled mixture of ``n_docs`` documents, ``mix`` giving each task's share."""
    unknown = set(mix) - set(TASKS)
    if unknown or not mix or any(share < 0 for share in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"mix must give non-negative shares for tasks {TASKS}, got {dict(mix)}")
    total = sum(mix.values())
    tasks = [task for task in TASKS if mix.get(task, 0) > 0]
    counts = {task: int(round(n_docs * mix[task] / total)) for task in tasks}
    counts[tasks[0]] += n_docs - sum(counts.values())
    generators = {"review": generate_reviews, "qa": generate_qa, "summary": generate_summaries}
    documents = [doc for task in tasks for doc in generators[task](counts[task], seed, split)]
    random.Random(f"rlhfkit-corpus-mix-{seed}").shuffle(documents)
    return documents
