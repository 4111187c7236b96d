"""WebShop's store, offline: a seeded catalogue, instructions, BM25 search, the reward.

WebShop (Yao et al., 2022) has an agent shop in a web store for a product matching an
instruction.  This is a self-contained store in its image: a catalogue generated from a seed
(six categories, four product types each; every product has a title, a price, attributes such
as material or fit, options such as size and colour, and a description), instructions built
the way WebShop builds its own (from a real target product: some of its attributes, one value
of its options, and a price ceiling above its price, phrased in natural language with several
phrasings per template), the three tools (``search``, ``open_item``, ``buy``) over one
episode's session, and WebShop's reward.

The reward is WebShop's (its paper, eq. 1)::

    r = r_type * (|U_att & Y_att| + |U_opt & Y_opt| + 1[y_price <= u_price])
                 / (|U_att| + |U_opt| + 1)

with ``U`` the instruction's attributes, options and price ceiling and ``Y`` the bought item's
attributes, the options chosen at the purchase and its price; ``r_type`` is 1 when the item is
of the product type asked for, 0.5 when it is another type of the same category, 0.1 otherwise
(WebShop's type factor compares titles and categories; ours compares the generated type).
An episode succeeds when its reward is 1.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import random
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagcall import Tool, ToolArgumentError, ToolError, UsageError

__all__ = [
    "CATEGORIES",
    "Catalogue",
    "Instruction",
    "Product",
    "Purchase",
    "WebShopSession",
    "generate_instructions",
    "reward",
]

PRODUCTS = 1200
SEARCH_RESULTS = 10
_ITEM_ID = re.compile(r"\bB0[0-9A-Z]{8}\b")


@dataclass(frozen=True)
class Category:
    types: tuple[str, ...]
    attributes: tuple[str, ...]
    options: tuple[tuple[str, tuple[str, ...]], ...]  # (option name, its values)
    price: tuple[float, float]


_COLOURS = ("black", "white", "navy", "heather grey", "olive", "burgundy", "sky blue", "khaki")
CATEGORIES: dict[str, Category] = {
    "fashion": Category(
        types=("men's shirt", "women's dress", "hoodie", "jeans"),
        attributes=(
            "machine wash",
            "slim fit",
            "cotton",
            "long sleeve",
            "button down",
            "relaxed fit",
            "moisture wicking",
            "wrinkle free",
            "polyester",
            "short sleeve",
        ),
        options=(
            ("size", ("x-small", "small", "medium", "large", "x-large", "xx-large")),
            ("color", _COLOURS),
        ),
        price=(12.0, 60.0),
    ),
    "shoes": Category(
        types=("running shoes", "hiking boots", "sandals", "loafers"),
        attributes=(
            "non slip",
            "rubber sole",
            "waterproof",
            "memory foam",
            "lightweight",
            "breathable",
            "leather",
            "arch support",
            "wide toe box",
            "lace up",
        ),
        options=(
            ("size", ("6", "7", "7.5", "8", "8.5", "9", "9.5", "10", "11", "12")),
            ("color", ("black", "white", "brown", "grey", "navy", "tan", "red")),
        ),
        price=(25.0, 140.0),
    ),
    "beauty": Category(
        types=("face moisturizer", "shampoo", "lip balm", "sunscreen"),
        attributes=(
            "paraben free",
            "cruelty free",
            "fragrance free",
            "natural ingredients",
            "vegan",
            "sensitive skin",
            "long lasting",
            "travel size",
            "hyaluronic acid",
            "spf 30",
        ),
        options=(
            ("size", ("1 ounce", "2 ounce", "4 ounce", "8 ounce", "16 ounce")),
            ("scent", ("unscented", "lavender", "coconut", "citrus", "vanilla", "mint")),
        ),
        price=(5.0, 45.0),
    ),
    "grocery": Category(
        types=("coffee beans", "green tea", "protein bars", "trail mix"),
        attributes=(
            "gluten free",
            "non gmo",
            "organic",
            "sugar free",
            "keto friendly",
            "low calorie",
            "high protein",
            "kosher",
            "fair trade",
            "plant based",
        ),
        options=(
            ("flavor", ("original", "chocolate", "vanilla", "caramel", "mixed berry", "honey")),
            ("size", ("pack of 1", "pack of 3", "pack of 6", "pack of 12")),
        ),
        price=(6.0, 50.0),
    ),
    "electronics": Category(
        types=("wireless earbuds", "phone charger", "bluetooth speaker", "hdmi cable"),
        attributes=(
            "fast charging",
            "noise cancelling",
            "water resistant",
            "usb c",
            "long battery life",
            "high definition",
            "easy to carry",
            "plug and play",
            "gold plated",
            "wireless charging",
        ),
        options=(
            ("color", ("black", "white", "blue", "red", "silver", "rose gold")),
            ("style", ("1 pack", "2 pack", "3 pack", "with case", "without case")),
        ),
        price=(9.0, 120.0),
    ),
    "home": Category(
        types=("bath towel set", "throw pillow", "bed sheet set", "storage bins"),
        attributes=(
            "machine washable",
            "easy clean",
            "space saving",
            "extra soft",
            "microfiber",
            "100% cotton",
            "wrinkle resistant",
            "stain resistant",
            "hypoallergenic",
            "quick drying",
        ),
        options=(
            ("size", ("twin", "full", "queen", "king", "california king")),
            ("color", ("white", "ivory", "grey", "navy", "sage green", "blush pink")),
        ),
        price=(15.0, 90.0),
    ),
}

_BRANDS = (
    "Alderon",
    "Brava",
    "Coastline",
    "Dunmore",
    "Everpeak",
    "Fablehouse",
    "Greystone",
    "Harlow & Co",
    "Ironleaf",
    "Juniper Lane",
    "Kestrel",
    "Lumen",
    "Marlowe",
    "Northwind",
    "Oakridge",
    "Pinecrest",
    "Quillon",
    "Riverbend",
    "Solstice",
    "Tidewater",
    "Umbra",
    "Vantage",
    "Willowby",
    "Zephyr",
)
_FILLER = (
    "Designed for everyday use and built to last.",
    "A customer favourite, now in more choices.",
    "Backed by a 30-day satisfaction guarantee.",
    "Thoughtfully made with attention to every detail.",
    "Ships in recyclable packaging.",
    "Great as a gift for friends and family.",
)


@dataclass(frozen=True)
class Product:
    """One product of the catalogue."""

    item_id: str
    title: str
    category: str
    product_type: str
    price: float
    attributes: tuple[str, ...]
    options: tuple[tuple[str, tuple[str, ...]], ...]  # (name, the values offered)
    description: str

    def offered(self) -> dict[str, tuple[str, ...]]:
        return dict(self.options)

    def page(self) -> str:
        """The item's page as the agent sees it."""
        opts = "\n".join(f"  {name}: {', '.join(values)}" for name, values in self.options)
        return (
            f"[{self.item_id}] {self.title}\n"
            f"Price: ${self.price:.2f}\n"
            f"Category: {self.category} > {self.product_type}\n"
            f"Attributes: {', '.join(self.attributes)}\n"
            f"Options:\n{opts}\n"
            f"Description: {self.description}"
        )


def _item_id(rng: random.Random, taken: set[str]) -> str:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    while True:
        item_id = "B0" + "".join(rng.choice(alphabet) for _ in range(8))
        if item_id not in taken:
            taken.add(item_id)
            return item_id


def _title_case(text: str) -> str:
    return " ".join(w if w[0].isdigit() else w[0].upper() + w[1:] for w in text.split())


def _price(rng: random.Random, low: float, high: float) -> float:
    whole = rng.uniform(low, high)
    return round(math.floor(whole) + rng.choice((0.49, 0.95, 0.99)), 2)


def _product(rng: random.Random, category: str, taken: set[str]) -> Product:
    spec = CATEGORIES[category]
    kind = rng.choice(spec.types)
    attributes = tuple(rng.sample(spec.attributes, rng.randint(3, 5)))
    options = []
    for name, values in spec.options:
        chosen = set(rng.sample(values, rng.randint(2, min(5, len(values)))))
        options.append((name, tuple(v for v in values if v in chosen)))
    brand = rng.choice(_BRANDS)
    in_title = list(attributes[: rng.randint(1, 3)])
    title = f"{brand} {_title_case(kind)} - {', '.join(_title_case(a) for a in in_title)}"
    described = [a for a in attributes if rng.random() < 0.5]
    description = (
        f"This {kind} from {brand} is "
        + (", ".join(described) if described else "a dependable choice")
        + f". {rng.choice(_FILLER)} {rng.choice(_FILLER)}"
    )
    return Product(
        item_id=_item_id(rng, taken),
        title=title,
        category=category,
        product_type=kind,
        price=_price(rng, *spec.price),
        attributes=attributes,
        options=tuple(options),
        description=description,
    )


def _bm25s() -> Any:
    try:
        return importlib.import_module("bm25s")
    except ImportError:
        raise UsageError(
            "the WebShop benchmark's search needs bm25s: pip install 'dagcall[docs]'"
        ) from None


class Catalogue:
    """A seeded catalogue of ``size`` products with a BM25 index over titles and
    descriptions.  Read-only once built, so every episode can share it."""

    def __init__(self, size: int = PRODUCTS, seed: int = 0) -> None:
        if size < len(CATEGORIES):
            raise UsageError(f"a catalogue needs at least {len(CATEGORIES)} products")
        rng = random.Random(f"webshop-catalogue:{seed}")  # noqa: S311 - reproducible data
        taken: set[str] = set()
        names = list(CATEGORIES)
        self.products = [_product(rng, names[i % len(names)], taken) for i in range(size)]
        self.by_id = {p.item_id: p for p in self.products}
        self.seed = seed
        bm25s = _bm25s()
        corpus = [f"{p.title} {p.product_type} {p.description}" for p in self.products]
        self._bm25 = bm25s.BM25()
        self._bm25.index(
            bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False
        )
        self._lock = threading.Lock()

    def search(self, query: str, k: int = SEARCH_RESULTS) -> list[Product]:
        """The ``k`` best products for ``query`` by BM25, best first (none that share no word
        with it)."""
        bm25s = _bm25s()
        words = bm25s.tokenize([query], return_ids=False, stopwords="en", show_progress=False)
        if not words or not words[0]:
            return []
        with self._lock:
            ids, scores = self._bm25.retrieve(
                words, k=min(k, len(self.products)), show_progress=False
            )
        ranked = sorted(
            ((float(s), int(i)) for i, s in zip(ids[0], scores[0], strict=True) if float(s) > 0),
            key=lambda pair: (-pair[0], pair[1]),
        )
        return [self.products[i] for _, i in ranked]


_CACHE: dict[tuple[int, int], Catalogue] = {}
_CACHE_LOCK = threading.Lock()


def catalogue(size: int = PRODUCTS, seed: int = 0) -> Catalogue:
    """The catalogue for ``(size, seed)``, built once per process."""
    with _CACHE_LOCK:
        if (size, seed) not in _CACHE:
            _CACHE[(size, seed)] = Catalogue(size, seed)
        return _CACHE[(size, seed)]


# -- instructions ------------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    """What to buy, built from a target product (so some product satisfies it)."""

    id: str
    text: str
    target_id: str
    category: str
    product_type: str
    attributes: tuple[str, ...]
    options: tuple[tuple[str, str], ...]  # (name, value)
    price_ceiling: float

    @property
    def goal_options(self) -> dict[str, str]:
        return dict(self.options)

    @property
    def constraints(self) -> int:
        return len(self.attributes) + len(self.options) + 1


# Templates, each with several phrasings: {a} is "a" or "an", {attrs} the attributes, {kind}
# the product type, {opts} the options, {price} the ceiling.
_TEMPLATES: tuple[tuple[str, ...], ...] = (
    (
        "i need {a}{attrs} {kind}{opts}, and price lower than {price} dollars",
        "i want {a}{attrs} {kind}{opts}, and price lower than {price} dollars",
        "i am looking for {a}{attrs} {kind}{opts}, and price lower than {price} dollars",
    ),
    (
        "find me {a}{kind} that {be} {attrs_and},{opts}, under {price} dollars",
        "could you find me {a}{kind} that {be} {attrs_and},{opts}? it should cost under "
        "{price} dollars",
    ),
    (
        "i'm shopping for {a}{attrs} {kind}{opts}; my budget is {price} dollars",
        "help me buy {a}{attrs} {kind}{opts}, my budget is {price} dollars",
        "get me {a}{attrs} {kind}{opts} for no more than {price} dollars",
    ),
)
_OPTION_PHRASES: dict[str, tuple[str, ...]] = {
    "size": ("size {v}", "in size {v}", "in {v} size"),
    "color": ("in {v}", "in {v} color", "colored {v}"),
    "scent": ("with {v} scent", "in the {v} scent"),
    "flavor": ("in {v} flavor", "with {v} flavor"),
    "style": ("in the {v} style", "style {v}"),
}


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _instruction(rng: random.Random, index: int, target: Product) -> Instruction:
    attributes = tuple(rng.sample(target.attributes, rng.randint(2, 3)))
    names = [n for n, _ in target.options]
    options = tuple((n, rng.choice(target.offered()[n])) for n in names)
    ceiling = float(math.ceil(target.price * rng.uniform(1.05, 1.5) / 10) * 10)
    template = rng.choice(_TEMPLATES)
    phrasing = rng.choice(template)
    opts = [rng.choice(_OPTION_PHRASES[n]).format(v=v) for n, v in options]
    first = (attributes[0] if "{a}{attrs}" in phrasing else target.product_type)[0]
    plural = target.product_type.endswith("s")
    uncountable = target.product_type in ("trail mix", "green tea")
    article = "" if plural or uncountable else "an " if first in "aeiou" else "a "
    text = phrasing.format(
        a=article,
        attrs=" ".join(attributes),
        attrs_and=_and(attributes),
        be="are" if plural else "is",
        kind=target.product_type,
        opts=" " + _and(opts),
        price=f"{ceiling:.2f}",
    )
    return Instruction(
        id=f"ws{index:03d}",
        text=text,
        target_id=target.item_id,
        category=target.category,
        product_type=target.product_type,
        attributes=attributes,
        options=options,
        price_ceiling=ceiling,
    )


def generate_instructions(store: Catalogue, count: int, seed: int = 0) -> list[Instruction]:
    """``count`` instructions, each from a distinct target product drawn with ``seed``."""
    rng = random.Random(f"webshop-instructions:{store.seed}:{seed}")  # noqa: S311
    targets = rng.sample(store.products, min(count, len(store.products)))
    return [_instruction(rng, i, t) for i, t in enumerate(targets)]


# -- the reward --------------------------------------------------------------------------
def type_factor(goal: Instruction, product: Product) -> float:
    if product.product_type == goal.product_type:
        return 1.0
    return 0.5 if product.category == goal.category else 0.1


def reward(goal: Instruction, product: Product, options: Mapping[str, str]) -> float:
    """WebShop's reward for buying ``product`` with ``options`` (see the module's text)."""
    chosen = {k.strip().lower(): str(v).strip().lower() for k, v in options.items()}
    attrs = sum(a in product.attributes for a in goal.attributes)
    opts = sum(chosen.get(n) == v for n, v in goal.options)
    price = product.price <= goal.price_ceiling
    return type_factor(goal, product) * (attrs + opts + price) / goal.constraints


# -- one episode's session ---------------------------------------------------------------
@dataclass(frozen=True)
class Purchase:
    item_id: str
    options: dict[str, str]
    reward: float


SEARCH_DOC = (
    "Search the store; returns the 10 best matching products, one a line, as "
    "'rank. [item id] title | $price'. Keywords work best (product type, attributes)."
)
OPEN_DOC = (
    "Open a product's page: its price, category, attributes, the options it is offered in "
    "(e.g. size, color) and its description. item_id is an id such as B0AB12CD34; or pass a "
    'search\'s result list ("$N") with rank, the 1-based rank of the result to open.'
)
BUY_DOC = (
    'Buy a product with the chosen options, e.g. buy("B0AB12CD34", {"size": "large", '
    '"color": "navy"}); each option must be one the page offers. item_id may also be a '
    'choice ("$N" of choose), which carries the options. Ends the episode: only one purchase '
    "is allowed."
)


@dataclass
class WebShopSession:
    """One episode: its instruction, what the agent has seen, and its purchase.  Each
    episode has its own session (its own tools), so concurrent episodes never share state."""

    store: Catalogue
    goal: Instruction
    searches: list[tuple[str, list[Product]]] = field(default_factory=list)
    opened: list[Product] = field(default_factory=list)
    purchase: Purchase | None = None
    buy_attempts: int = 0
    #: Seconds a call waits before it runs, by (tool, what it fetches); ``None``: no wait.
    delay: Callable[[str, str], float] | None = None

    async def wait(self, tool: str, key: str) -> None:
        if self.delay is not None:
            await asyncio.sleep(self.delay(tool, key))

    def _product(self, item_id: str) -> Product:
        product = self.store.by_id.get(item_id.strip().upper())
        if product is None:
            raise ToolArgumentError(f"no item {item_id!r} in the store: use an id from a search")
        return product

    def do_search(self, query: str) -> str:
        if self.purchase is not None:
            raise ToolError("the episode is over: an item was already bought", tool="search")
        if not query.strip():
            raise ToolArgumentError("search needs a non-empty query")
        results = self.store.search(query)
        self.searches.append((query, results))
        if not results:
            return f"No products match {query!r}."
        return "\n".join(
            f"{i}. [{p.item_id}] {p.title} | ${p.price:.2f}" for i, p in enumerate(results, 1)
        )

    def resolve(self, item_id: str, rank: int | None = None) -> str:
        """The item id ``open_item(item_id, rank)`` means (``item_id`` may be a result list)."""
        found = _ITEM_ID.findall(item_id)
        if rank is not None:
            if not 1 <= rank <= len(found):
                raise ToolArgumentError(
                    f"rank {rank} is not among the {len(found)} results given to open_item"
                )
            return str(found[rank - 1])
        return str(found[0]) if len(found) == 1 else item_id.strip().upper()

    def do_open(self, item_id: str, rank: int | None = None) -> str:
        if self.purchase is not None:
            raise ToolError("the episode is over: an item was already bought", tool="open_item")
        product = self._product(self.resolve(item_id, rank))
        if product not in self.opened:
            self.opened.append(product)
        return product.page()

    def choice(
        self, item_id: str, options: Mapping[str, str] | None
    ) -> tuple[str, Mapping[str, str] | None]:
        """``buy``'s arguments when ``item_id`` is a choice's output (JSON with the item and
        its options, see ``choose``), else as given."""
        text = item_id.strip()
        if not text.startswith("{"):
            return item_id, options
        try:
            data = json.loads(text)
        except ValueError:
            raise ToolArgumentError(
                f"buy: {text[:80]!r} is neither an item id nor a choice"
            ) from None
        if not isinstance(data, dict) or not data.get("item_id"):
            why = data.get("reason", "") if isinstance(data, dict) else ""
            raise ToolArgumentError(
                "the choice found no item that fits, so nothing was bought"
                + (f" ({why})" if why else "")
            )
        chosen = data.get("options")
        return str(data["item_id"]), options if options is not None else (
            chosen if isinstance(chosen, dict) else None
        )

    def do_buy(self, item_id: str, options: Mapping[str, str] | None = None) -> str:
        item_id, options = self.choice(item_id, options)
        self.buy_attempts += 1
        if self.purchase is not None:
            raise ToolError(
                f"the episode is over: {self.purchase.item_id} was already bought (one purchase "
                "per episode)",
                tool="buy",
            )
        product = self._product(item_id)
        offered = product.offered()
        chosen: dict[str, str] = {}
        for name, value in (options or {}).items():
            key, val = str(name).strip().lower(), str(value).strip().lower()
            if key not in offered:
                raise ToolArgumentError(
                    f"{product.item_id} has no option {name!r}; its options: {', '.join(offered)}"
                )
            if val not in offered[key]:
                raise ToolArgumentError(
                    f"{product.item_id} is not offered in {name} {value!r}; it comes in: "
                    + ", ".join(offered[key])
                )
            chosen[key] = val
        self.purchase = Purchase(product.item_id, chosen, reward(self.goal, product, chosen))
        shown = ", ".join(f"{k} {v}" for k, v in chosen.items())
        return f"Bought {product.item_id} ({product.title}, {shown}) for ${product.price:.2f}."

    @property
    def reward(self) -> float:
        return self.purchase.reward if self.purchase is not None else 0.0

    def tools(self) -> list[Tool]:
        session = self

        async def search(query: str) -> str:
            await session.wait("search", " ".join(query.lower().split()))
            return session.do_search(query)

        async def open_item(item_id: str, rank: int | None = None) -> str:
            try:
                key = session.resolve(item_id, rank)
            except ToolArgumentError:
                key = item_id
            await session.wait("open_item", key)
            return session.do_open(item_id, rank)

        async def buy(item_id: str, options: dict[str, str] | None = None) -> str:
            try:
                key = session.choice(item_id, options)[0].strip().upper()
            except ToolArgumentError:
                key = item_id
            await session.wait("buy", key)
            return session.do_buy(item_id, options)

        return [
            Tool(search, description=SEARCH_DOC),
            Tool(open_item, description=OPEN_DOC),
            Tool(buy, description=BUY_DOC, side_effects=True),
        ]
