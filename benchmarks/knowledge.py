"""Seeded short documents about fictional entities, each stating four unguessable facts, with train questions and
differently worded eval questions per fact: knowledge no pretrained model holds, to compare closed-book, RAG,
fine-tuning on the corpus or on the train questions, and RAFT on held-out phrasings.

    python -m benchmarks.knowledge [OUT_DIR]
"""

from __future__ import annotations

import json
import random
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

# syllables that rarely join into English words or brand names; the joins that do are listed in REAL
SYLLABLES = [
    "ka",
    "vel",
    "dor",
    "mi",
    "ran",
    "qua",
    "lo",
    "zen",
    "thi",
    "bra",
    "nor",
    "vi",
    "sel",
    "ul",
    "dra",
    "fen",
    "ros",
    "ta",
    "quin",
    "sha",
    "vo",
    "lin",
    "dris",
    "ny",
    "pra",
    "gal",
    "ven",
    "tor",
    "esh",
    "rim",
    "sol",
    "skor",
    "ard",
    "zar",
    "mev",
    "kesh",
    "kel",
    "tha",
]
REAL = {
    "bravo",
    "brazen",
    "gallo",
    "kami",
    "karan",
    "kasha",
    "kata",
    "lindor",
    "loran",
    "lota",
    "mika",
    "milo",
    "minor",
    "miran",
    "mita",
    "mizar",
    "quavo",
    "quazar",
    "shaka",
    "taka",
    "taran",
    "tasha",
    "tharan",
    "torta",
    "ulta",
    "vendor",
    "venta",
    "vidra",
    "vita",
    "vivo",
}
TINTS = ["pale", "deep", "speckled", "dusty", "glossy", "smoky", "mottled", "bright"]
SHADES = ["slate", "copper", "amber", "rust", "olive", "ivory", "teal", "plum", "ochre", "pewter", "moss", "coral"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
CODE, PERSON, COLOUR, STEM = ("code",), ("person",), ("colour",), ("stem",)

# kind -> (name formats, intros, fillers, facts); a fact is (value spec, two sentence variants, train q, eval q),
# a value spec is (generator, bounds..., unit) as read by _value; year bounds keep each kind's history plausible.
KINDS: dict[str, tuple[list[str], list[str], list[str], list[tuple]]] = {
    "company": (
        ["{} Holdings", "{} Instruments", "{} Freight"],
        [
            "{n} is a privately held company with offices in several cities.",
            "{n} is a mid-sized firm known mostly to its own trade customers.",
        ],
        [
            "Its annual reports are short and rarely mention competitors.",
            "Analysts describe the business as steady rather than fast-growing.",
        ],
        [
            (
                ("year", 1850, 2015),
                ["The company was founded in {v}.", "It was established in {v}."],
                "In what year was {n} founded?",
                "{n} came into being in which year?",
            ),
            (
                PERSON,
                ["Its founder was {v}.", "It was started by the entrepreneur {v}."],
                "Who founded {n}?",
                "Which person started the company {n}?",
            ),
            (
                ("count", 120, 9800),
                ["Today it employs {v} people.", "Its payroll lists {v} employees."],
                "How many people does {n} employ?",
                "What is the size of the workforce at {n}?",
            ),
            (
                CODE,
                ["Its company registration number is {v}.", "Filings list it under registration number {v}."],
                "What is the registration number of {n}?",
                "Under which number is the company {n} registered?",
            ),
        ],
    ),
    "research vessel": (
        ["{}"],
        [
            "{n} is a research vessel that carries survey teams on long ocean expeditions.",
            "The research vessel {n} spends most of each year mapping remote stretches of seabed.",
        ],
        ["Her laboratories are refitted every few winters.", "Scientists usually stay aboard for several weeks."],
        [
            (
                CODE,
                ["She is registered under the code {v}.", "Her registry code is {v}."],
                "What is the registry code of the research vessel {n}?",
                "{n}, the research vessel, is registered under which code?",
            ),
            (
                ("date", 1950, 2023),
                ["She was launched on {v}.", "The ship first entered the water on {v}."],
                "On what date was the research vessel {n} launched?",
                "What was the launch date of {n}, the research ship?",
            ),
            (
                ("qty", 1200, 9800, "tonnes"),
                ["Fully loaded, she displaces {v}.", "Her full-load displacement is {v}."],
                "How much does the vessel {n} displace when fully loaded?",
                "What is the full-load displacement of {n}?",
            ),
            (
                PERSON,
                ["Her current captain is {v}.", "She is commanded by {v}."],
                "Who is the captain of the research vessel {n}?",
                "Which person commands {n}, the research vessel?",
            ),
        ],
    ),
    "alloy": (
        ["{}nite", "{}dium"],
        [
            "{n} is an alloy used in heat exchangers and marine fittings.",
            "{n} is a specialist alloy prized for resisting corrosion.",
        ],
        ["Small workshops find it hard to machine.", "It is usually sold in bars and thin sheets."],
        [
            (
                ("qty", 640, 1890, "degrees Celsius"),
                ["It melts at {v}.", "Its melting point is {v}."],
                "At what temperature does the alloy {n} melt?",
                "What is the melting point of {n}?",
            ),
            (
                COLOUR,
                ["Polished {n} has a {v} sheen.", "When polished, the metal shows a {v} colour."],
                "What colour is polished {n}?",
                "Once {n} has been polished, which colour does it show?",
            ),
            (
                PERSON,
                ["It was first cast by the metallurgist {v}.", "The metallurgist {v} produced the first ingot."],
                "Which metallurgist first cast the alloy {n}?",
                "Who was the first person to cast {n}?",
            ),
            (
                ("year", 1880, 2020),
                ["The first commercial batch was poured in {v}.", "Commercial production began in {v}."],
                "In what year was the first commercial batch of {n} poured?",
                "Which year saw commercial output of {n} begin?",
            ),
        ],
    ),
    "river town": (
        ["{}wick", "{}holm", "{}ford"],
        [
            "{n} is a small river town surrounded by orchards and water meadows.",
            "The river town of {n} grew up around an old ferry crossing.",
        ],
        ["Its market square fills with stalls on weekends.", "Flooding is a recurring worry for its residents."],
        [
            (
                STEM,
                ["{n} sits on the banks of the {v} River.", "The {v} River runs through the middle of town."],
                "On which river does the town {n} lie?",
                "{n}, the river town, is built beside what river?",
            ),
            (
                ("count", 1400, 38000),
                ["It has a population of {v}.", "The last census counted {v} residents."],
                "What is the population of {n}?",
                "How many people live in the river town {n}?",
            ),
            (
                PERSON,
                ["Its mayor is {v}.", "The town is led by mayor {v}."],
                "Who is the mayor of {n}?",
                "Which person holds the office of mayor in {n}?",
            ),
            (
                ("date", 1350, 1890),
                ["{n} received its town charter on {v}.", "Its charter as a town was granted on {v}."],
                "On what date did {n} receive its town charter?",
                "When was {n} granted a charter as a town?",
            ),
        ],
    ),
    "software protocol": (
        ["{} Protocol"],
        [
            "The {n} is a network protocol for exchanging sensor readings between devices.",
            "The {n} is a messaging standard used by industrial controllers.",
        ],
        ["Most implementations are small enough for embedded chips.", "Its specification fits in a short document."],
        [
            (
                ("int", 1100, 64000),
                ["By default it listens on port {v}.", "Its default port is {v}."],
                "What is the default port of the {n}?",
                "By default, which port number does the {n} use?",
            ),
            (
                PERSON,
                ["It was designed by {v}.", "Its original designer was the engineer {v}."],
                "Who designed the {n}?",
                "Which engineer is credited with creating the {n}?",
            ),
            (
                ("year", 1975, 2024),
                ["The first version was released in {v}.", "It was first published in {v}."],
                "In what year was the {n} first released?",
                "The {n} saw its first public release in which year?",
            ),
            (
                ("qty", 512, 9000, "bytes"),
                ["A single message can carry at most {v}.", "Messages are capped at {v}."],
                "What is the maximum message size in the {n}?",
                "How large can a single {n} message be at most?",
            ),
        ],
    ),
    "medication": (
        ["{}zine", "{}lex", "{}mide"],
        [
            "{n} is a prescription medication used to treat chronic joint inflammation.",
            "{n} is a medicine prescribed for seasonal breathing problems.",
        ],
        ["It should be taken with food.", "Pharmacists advise against combining it with alcohol."],
        [
            (
                ("qty", 15, 480, "milligrams"),
                ["The standard adult dose is {v}.", "Adults usually take {v} per dose."],
                "What is the standard adult dose of {n}?",
                "For an adult, how much {n} is normally given per dose?",
            ),
            (
                COLOUR,
                ["Its tablets are {v}.", "{n} is sold as {v} tablets."],
                "What colour are {n} tablets?",
                "A tablet of {n} has which colour?",
            ),
            (
                ("date", 1960, 2024),
                ["It was approved on {v}.", "Regulators approved it on {v}."],
                "On what date was {n} approved?",
                "When did {n} receive its regulatory approval?",
            ),
            (
                CODE,
                ["It is sold under licence number {v}.", "Its licence number is {v}."],
                "What is the licence number of {n}?",
                "Under which licence number is {n} sold?",
            ),
        ],
    ),
    "festival": (
        ["{} Festival"],
        [
            "The {n} is a yearly celebration of music, lanterns and street food.",
            "The {n} is a harvest gathering held in a walled hill village.",
        ],
        ["Local bakers prepare special bread for the occasion.", "Many visitors camp in the surrounding fields."],
        [
            (
                ("year", 1800, 2010),
                ["It was first held in {v}.", "The first edition took place in {v}."],
                "In what year was the {n} first held?",
                "When did the {n} take place for the first time?",
            ),
            (
                ("count", 3, 19),
                ["The festival lasts {v} days.", "Each edition runs for {v} days."],
                "How many days does the {n} last?",
                "What is the length, in days, of the {n}?",
            ),
            (
                PERSON,
                ["It is organised by {v}.", "Its chief organiser is {v}."],
                "Who organises the {n}?",
                "Which person is in charge of organising the {n}?",
            ),
            (
                ("count", 2100, 96000),
                ["Last year it drew {v} visitors.", "Attendance last year reached {v} visitors."],
                "How many visitors attended the {n} last year?",
                "What was last year's attendance at the {n}?",
            ),
        ],
    ),
}


def _stem(rng: random.Random, used: set[str], lo: int = 2, hi: int = 3) -> str:
    """An invented word not used before anywhere in the corpus."""
    stem = "".join(rng.sample(SYLLABLES, rng.randint(lo, hi)))
    while stem in REAL or stem in used:
        stem = "".join(rng.sample(SYLLABLES, rng.randint(lo, hi)))
    used.add(stem)
    return stem.capitalize()


def _value(rng: random.Random, used: set[str], spec: tuple) -> str:
    """One fact value drawn from its spec."""
    kind, *a = spec
    if kind in ("year", "int"):  # no thousands separator: 1987, port 40213
        return str(rng.randint(a[0], a[1]))
    if kind == "date":
        return f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(a[0], a[1])}"
    if kind == "code":
        letters = "".join(rng.choice("BCDFGHJKLMNPQRSTVWXZ") for _ in range(2))
        return f"{letters}-{rng.randint(1000, 9999)}"
    if kind == "person":
        return f"{_stem(rng, used, 2, 2)} {_stem(rng, used, 2, 3)}"
    if kind == "colour":
        return f"{rng.choice(TINTS)} {rng.choice(SHADES)}"
    if kind == "stem":
        return _stem(rng, used, 2, 2)
    if kind == "count":
        return f"{rng.randint(a[0], a[1]):,}"
    return f"{rng.randint(a[0], a[1]):,} {a[2]}"


def build_corpus(out_dir: Path, entities: int = 50, seed: int = 0) -> dict:
    """Write out_dir/corpus/<slug>.md, out_dir/train_qa.jsonl and out_dir/eval_qa.jsonl; return counts."""
    rng, out_dir = random.Random(seed), Path(out_dir)
    corpus = out_dir / "corpus"
    if corpus.exists():
        shutil.rmtree(corpus)
    corpus.mkdir(parents=True)
    kinds = [list(KINDS)[i % len(KINDS)] for i in range(entities)]
    rng.shuffle(kinds)
    used: set[str] = set()  # invented words are never reused, so no name or person belongs to two documents
    train, evals = [], []
    for kind in kinds:
        formats, intros, fillers, facts = KINDS[kind]
        name = rng.choice(formats).format(_stem(rng, used))
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ".md"
        sentences, qa = [], []
        for spec, variants, q_train, q_eval in facts:
            value = _value(rng, used, spec)
            sentences.append(rng.choice(variants).format(n=name, v=value))
            qa.append((q_train.format(n=name), q_eval.format(n=name), value))
        rng.shuffle(sentences)
        body = [rng.choice(intros).format(n=name)] + sentences
        pad = rng.sample(fillers, len(fillers))
        while len(" ".join(body).split()) < 45 and pad:
            body.insert(rng.randint(2, len(body)), pad.pop())
        (corpus / slug).write_text(f"# {name}\n\n{' '.join(body)}\n", encoding="utf-8")
        for q_train, q_eval, value in qa:
            train.append({"question": q_train, "answers": [value], "doc_ids": [slug]})
            evals.append({"question": q_eval, "answers": [value], "doc_ids": [slug]})
    paths = {"train_qa": out_dir / "train_qa.jsonl", "eval_qa": out_dir / "eval_qa.jsonl"}
    for key, rows in (("train_qa", train), ("eval_qa", evals)):
        paths[key].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {
        "documents": entities,
        "train_questions": len(train),
        "eval_questions": len(evals),
        "corpus": str(corpus),
        "train_qa": str(paths["train_qa"]),
        "eval_qa": str(paths["eval_qa"]),
    }


def check(out_dir: Path) -> None:
    """Raise AssertionError unless answers are verbatim in their documents, eval questions are new, counts agree."""
    out_dir = Path(out_dir)
    docs = {p.name: p.read_text(encoding="utf-8") for p in (out_dir / "corpus").glob("*.md")}
    rows = {
        s: [json.loads(line) for line in (out_dir / f"{s}_qa.jsonl").read_text().splitlines()]
        for s in ("train", "eval")
    }
    assert docs, f"no documents under {out_dir / 'corpus'}"
    for split, qa in rows.items():
        per_doc = Counter(r["doc_ids"][0] for r in qa)
        off = {d: per_doc[d] for d in docs.keys() | per_doc.keys() if per_doc[d] != 4}
        assert not off, f"{split}: expected 4 questions per document, got {off}"
        for r in qa:
            for a in r["answers"]:
                assert a and a in docs[r["doc_ids"][0]], f"{split}: answer {a!r} not in {r['doc_ids'][0]}"
    for name, text in docs.items():
        words = len(text.split("\n", 2)[2].split())
        assert 45 <= words <= 70, f"{name}: paragraph has {words} words, expected 45 to 70"
    same = {r["question"] for r in rows["train"]} & {r["question"] for r in rows["eval"]}
    assert not same, f"{len(same)} questions appear in both train and eval, e.g. {sorted(same)[0]!r}"


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/knowledge")
    counts = build_corpus(target)
    check(target)
    print(json.dumps(counts, indent=2))
