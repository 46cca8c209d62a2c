"""Consistency of the text with the structured attributes it was written from.

Checks (each a reason code): the persona's age (`age_mismatch`), birth year
(`birth_year_mismatch`), number of children (`children_mismatch`), years in the job
(`years_in_job_mismatch`), income in the right order of magnitude (`income_mismatch`),
occupation (`occupation_mismatch`), the place it lives (`location_mismatch`: a known city
or country) and the kind of settlement (`settlement_mismatch`: a village is not a large
city). The persona's name and pronouns are `identity.py`'s.

Precision over recall: a statement only counts when it is unmistakably about the persona
(first person "I am 34", the persona's name or a pronoun of the persona's gender as the
subject of a present-tense statement) and no other person (daughter, husband, friend...)
is mentioned in that sentence or the one before. A contradiction needs both sides known:
an unknown occupation word or place name is never a rejection.
"""

from __future__ import annotations

import re

from personaloom.critic.identity import OTHER_PEOPLE
from personaloom.critic.rule_critics import (
    CriticContext,
    CriticResult,
    attribute_values,
    rule_critic,
    text_units,
)

NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen".split()
    )
}
TENS = {
    w: 10 * (i + 2)
    for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())
}

# Occupation words grouped by meaning; two statements contradict only when both are known
# words and fall in different groups. Groups are deliberately broad.
OCCUPATION_GROUPS: dict[str, list[str]] = {
    "teaching": [
        "teacher",
        "schoolteacher",
        "educator",
        "instructor",
        "tutor",
        "professor",
        "lecturer",
    ],
    "nursing": ["nurse", "midwife"],
    "medicine": [
        "doctor",
        "physician",
        "surgeon",
        "general practitioner",
        "pediatrician",
        "paediatrician",
        "psychiatrist",
        "cardiologist",
        "dermatologist",
        "radiologist",
        "anesthesiologist",
        "oncologist",
    ],
    "dentistry": ["dentist", "dental hygienist", "orthodontist"],
    "pharmacy": ["pharmacist"],
    "software": [
        "software engineer",
        "software developer",
        "developer",
        "programmer",
        "coder",
        "web developer",
        "data scientist",
    ],
    "engineering": [
        "engineer",
        "civil engineer",
        "mechanical engineer",
        "electrical engineer",
        "chemical engineer",
    ],
    "law": ["lawyer", "attorney", "solicitor", "barrister", "paralegal"],
    "finance": [
        "accountant",
        "bookkeeper",
        "auditor",
        "banker",
        "financial analyst",
        "financial advisor",
    ],
    "cooking": ["chef", "cook", "sous chef", "line cook", "baker", "pastry chef"],
    "hospitality": ["waiter", "waitress", "bartender", "barista"],
    "police": ["police officer", "policeman", "policewoman", "detective", "sheriff", "cop"],
    "firefighting": ["firefighter", "fireman"],
    "electrical": ["electrician"],
    "plumbing": ["plumber"],
    "carpentry": ["carpenter", "joiner", "woodworker"],
    "mechanics": ["mechanic", "auto mechanic"],
    "farming": ["farmer", "rancher"],
    "driving": [
        "truck driver",
        "taxi driver",
        "bus driver",
        "delivery driver",
        "courier",
        "driver",
    ],
    "aviation": ["pilot", "flight attendant"],
    "architecture": ["architect"],
    "art": ["artist", "painter", "illustrator", "sculptor"],
    "music": ["musician", "singer", "composer", "guitarist", "pianist", "violinist", "drummer"],
    "writing": [
        "writer",
        "author",
        "novelist",
        "journalist",
        "reporter",
        "editor",
        "copywriter",
        "poet",
    ],
    "design": ["graphic designer", "designer", "interior designer"],
    "photography": ["photographer"],
    "retail": ["cashier", "sales associate", "shop assistant", "store clerk", "salesperson"],
    "social_care": ["social worker", "counselor", "counsellor", "therapist", "psychologist"],
    "veterinary": ["veterinarian", "vet"],
    "library": ["librarian"],
    "science": ["scientist", "researcher", "biologist", "chemist", "physicist"],
    "military": ["soldier"],
    "hair": ["hairdresser", "barber", "hairstylist"],
    "cleaning": ["janitor", "cleaner", "custodian", "housekeeper"],
    "real_estate": ["real estate agent", "realtor"],
    "emergency": ["paramedic"],
    "postal": ["mail carrier", "postman", "postal worker"],
    "fitness": ["personal trainer", "fitness instructor", "yoga instructor"],
}
NOT_AN_OCCUPATION = re.compile(
    r"\b(?:student|retired|former|ex-|unemployed|homemaker|stay-at-home|volunteer|between jobs)\b",
    re.I,
)

# Countries with their common aliases (canonical name first).
COUNTRIES: dict[str, list[str]] = {
    "United States": [
        "United States",
        "United States of America",
        "USA",
        "US",
        "U.S.",
        "U.S.A.",
        "America",
    ],
    "United Kingdom": [
        "United Kingdom",
        "UK",
        "U.K.",
        "Britain",
        "Great Britain",
        "England",
        "Scotland",
        "Wales",
        "Northern Ireland",
    ],
    "Canada": ["Canada"],
    "Mexico": ["Mexico"],
    "Brazil": ["Brazil"],
    "Argentina": ["Argentina"],
    "Chile": ["Chile"],
    "Colombia": ["Colombia"],
    "Peru": ["Peru"],
    "Venezuela": ["Venezuela"],
    "Ecuador": ["Ecuador"],
    "Bolivia": ["Bolivia"],
    "Uruguay": ["Uruguay"],
    "Paraguay": ["Paraguay"],
    "Cuba": ["Cuba"],
    "Jamaica": ["Jamaica"],
    "Guatemala": ["Guatemala"],
    "Costa Rica": ["Costa Rica"],
    "Panama": ["Panama"],
    "Dominican Republic": ["Dominican Republic"],
    "Puerto Rico": ["Puerto Rico"],
    "Ireland": ["Ireland"],
    "France": ["France"],
    "Germany": ["Germany"],
    "Spain": ["Spain"],
    "Portugal": ["Portugal"],
    "Italy": ["Italy"],
    "Netherlands": ["Netherlands", "Holland"],
    "Belgium": ["Belgium"],
    "Switzerland": ["Switzerland"],
    "Austria": ["Austria"],
    "Sweden": ["Sweden"],
    "Norway": ["Norway"],
    "Denmark": ["Denmark"],
    "Finland": ["Finland"],
    "Iceland": ["Iceland"],
    "Poland": ["Poland"],
    "Czech Republic": ["Czech Republic", "Czechia"],
    "Slovakia": ["Slovakia"],
    "Hungary": ["Hungary"],
    "Romania": ["Romania"],
    "Bulgaria": ["Bulgaria"],
    "Greece": ["Greece"],
    "Croatia": ["Croatia"],
    "Serbia": ["Serbia"],
    "Slovenia": ["Slovenia"],
    "Ukraine": ["Ukraine"],
    "Russia": ["Russia"],
    "Belarus": ["Belarus"],
    "Lithuania": ["Lithuania"],
    "Latvia": ["Latvia"],
    "Estonia": ["Estonia"],
    "Turkey": ["Turkey", "Türkiye"],
    "Israel": ["Israel"],
    "Lebanon": ["Lebanon"],
    "Jordan": ["Jordan"],
    "Syria": ["Syria"],
    "Iraq": ["Iraq"],
    "Iran": ["Iran"],
    "Saudi Arabia": ["Saudi Arabia"],
    "United Arab Emirates": ["United Arab Emirates", "UAE"],
    "Qatar": ["Qatar"],
    "Egypt": ["Egypt"],
    "Morocco": ["Morocco"],
    "Algeria": ["Algeria"],
    "Tunisia": ["Tunisia"],
    "Nigeria": ["Nigeria"],
    "Ghana": ["Ghana"],
    "Kenya": ["Kenya"],
    "Ethiopia": ["Ethiopia"],
    "Tanzania": ["Tanzania"],
    "Uganda": ["Uganda"],
    "Senegal": ["Senegal"],
    "South Africa": ["South Africa"],
    "Zimbabwe": ["Zimbabwe"],
    "Rwanda": ["Rwanda"],
    "India": ["India"],
    "Pakistan": ["Pakistan"],
    "Bangladesh": ["Bangladesh"],
    "Sri Lanka": ["Sri Lanka"],
    "Nepal": ["Nepal"],
    "China": ["China"],
    "Japan": ["Japan"],
    "South Korea": ["South Korea", "Korea"],
    "Taiwan": ["Taiwan"],
    "Hong Kong": ["Hong Kong"],
    "Vietnam": ["Vietnam", "Viet Nam"],
    "Thailand": ["Thailand"],
    "Malaysia": ["Malaysia"],
    "Singapore": ["Singapore"],
    "Indonesia": ["Indonesia"],
    "Philippines": ["Philippines"],
    "Australia": ["Australia"],
    "New Zealand": ["New Zealand"],
    "Kazakhstan": ["Kazakhstan"],
    "Myanmar": ["Myanmar", "Burma"],
    "DR Congo": ["DR Congo", "Democratic Republic of the Congo", "DRC", "Congo"],
    "Sudan": ["Sudan"],
    "Papua New Guinea": ["Papua New Guinea"],
    "Afghanistan": ["Afghanistan"],
    "Uzbekistan": ["Uzbekistan"],
    "Yemen": ["Yemen"],
    "Cameroon": ["Cameroon"],
    "Angola": ["Angola"],
    "Mozambique": ["Mozambique"],
    "Madagascar": ["Madagascar"],
    "Ivory Coast": ["Ivory Coast", "Côte d'Ivoire", "Cote d'Ivoire"],
    "Cambodia": ["Cambodia"],
    "Mongolia": ["Mongolia"],
}
CITIES: dict[str, str] = {
    **dict.fromkeys(
        [
            "New York",
            "New York City",
            "Los Angeles",
            "Chicago",
            "Houston",
            "Phoenix",
            "Philadelphia",
            "San Antonio",
            "San Diego",
            "Dallas",
            "Austin",
            "San Francisco",
            "Seattle",
            "Denver",
            "Boston",
            "Atlanta",
            "Miami",
            "Detroit",
            "Minneapolis",
            "Portland",
            "Las Vegas",
            "Nashville",
            "New Orleans",
            "Baltimore",
            "Pittsburgh",
            "Cleveland",
            "Washington, D.C.",
        ],
        "United States",
    ),
    **dict.fromkeys(
        [
            "London",
            "Manchester",
            "Birmingham",
            "Liverpool",
            "Leeds",
            "Glasgow",
            "Edinburgh",
            "Bristol",
            "Cardiff",
            "Belfast",
        ],
        "United Kingdom",
    ),
    **dict.fromkeys(
        ["Toronto", "Montreal", "Vancouver", "Calgary", "Ottawa", "Edmonton"], "Canada"
    ),
    **dict.fromkeys(["Mexico City", "Guadalajara", "Monterrey"], "Mexico"),
    **dict.fromkeys(
        ["São Paulo", "Sao Paulo", "Rio de Janeiro", "Brasília", "Brasilia", "Salvador"], "Brazil"
    ),
    "Buenos Aires": "Argentina",
    "Santiago": "Chile",
    "Bogotá": "Colombia",
    "Bogota": "Colombia",
    "Lima": "Peru",
    "Havana": "Cuba",
    "Dublin": "Ireland",
    **dict.fromkeys(["Paris", "Lyon", "Marseille", "Toulouse", "Nice", "Bordeaux"], "France"),
    **dict.fromkeys(
        ["Berlin", "Munich", "Hamburg", "Cologne", "Frankfurt", "Stuttgart"], "Germany"
    ),
    **dict.fromkeys(["Madrid", "Barcelona", "Valencia", "Seville"], "Spain"),
    **dict.fromkeys(["Lisbon", "Porto"], "Portugal"),
    **dict.fromkeys(["Rome", "Milan", "Naples", "Turin", "Florence", "Venice"], "Italy"),
    **dict.fromkeys(["Amsterdam", "Rotterdam", "The Hague", "Utrecht"], "Netherlands"),
    "Brussels": "Belgium",
    "Zurich": "Switzerland",
    "Geneva": "Switzerland",
    "Vienna": "Austria",
    "Stockholm": "Sweden",
    "Oslo": "Norway",
    "Copenhagen": "Denmark",
    "Helsinki": "Finland",
    "Warsaw": "Poland",
    "Krakow": "Poland",
    "Prague": "Czech Republic",
    "Budapest": "Hungary",
    "Bucharest": "Romania",
    "Athens": "Greece",
    "Kyiv": "Ukraine",
    "Kiev": "Ukraine",
    "Moscow": "Russia",
    "Saint Petersburg": "Russia",
    "Istanbul": "Turkey",
    "Ankara": "Turkey",
    "Tel Aviv": "Israel",
    "Dubai": "United Arab Emirates",
    "Cairo": "Egypt",
    "Lagos": "Nigeria",
    "Nairobi": "Kenya",
    "Johannesburg": "South Africa",
    "Cape Town": "South Africa",
    **dict.fromkeys(
        [
            "Mumbai",
            "Delhi",
            "New Delhi",
            "Bangalore",
            "Bengaluru",
            "Chennai",
            "Kolkata",
            "Hyderabad",
            "Pune",
        ],
        "India",
    ),
    "Karachi": "Pakistan",
    "Lahore": "Pakistan",
    "Dhaka": "Bangladesh",
    **dict.fromkeys(["Beijing", "Shanghai", "Shenzhen", "Guangzhou", "Chengdu", "Wuhan"], "China"),
    **dict.fromkeys(["Tokyo", "Osaka", "Kyoto", "Yokohama", "Sapporo"], "Japan"),
    "Seoul": "South Korea",
    "Busan": "South Korea",
    "Taipei": "Taiwan",
    "Hanoi": "Vietnam",
    "Ho Chi Minh City": "Vietnam",
    "Bangkok": "Thailand",
    "Kuala Lumpur": "Malaysia",
    "Jakarta": "Indonesia",
    "Manila": "Philippines",
    **dict.fromkeys(["Sydney", "Melbourne", "Brisbane", "Perth", "Adelaide"], "Australia"),
    "Auckland": "New Zealand",
    "Wellington": "New Zealand",
}
_COUNTRY_ALIAS = {
    alias.lower().rstrip("."): name for name, aliases in COUNTRIES.items() for alias in aliases
}
_CITY = {city.lower(): country for city, country in CITIES.items()}

_NUM = r"(?P<n>\d{1,3}|[A-Za-z]+(?:-[A-Za-z]+)?)"
_BE = r"(?:\s+(?:is|am)|\s*(?:'s|’s|'m|’m))"
_NAME_WORD = r"(?P<name>[A-Z][a-z'’-]+)"
_YEAR = r"(?P<year>(?:19|20)\d{2})\b"
_COUNT = r"(?P<n>no|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|\d{1,2})"
_KIDS = r"(?i:(?:young\s+|grown(?:-up)?\s+|adult\s+|little\s+|small\s+|wonderful\s+|lovely\s+)?(?:children|kids))\b"
_MONEY = (
    r"(?:(?P<cur>US\$|\$|USD\s?)(?P<amt>\d[\d,]*(?:\.\d+)?)(?:\s*(?P<mult>k|K|thousand|million|m|M)\b)?"
    r"|(?P<amt2>\d[\d,]*(?:\.\d+)?)(?:\s*(?P<mult2>thousand|million)\b)?\s+(?i:(?:US\s+)?dollars|USD)\b)"
    r"(?:\s+(?i:(?:a|an|per|each|every)\s+(?P<per>year|yr|annum|month|week|day|hour)))?"
)
_SETTLEMENT = (
    r"(?P<kind>(?i:(?:an?|the)\s+(?:[\w-]+\s+){0,2}?(?:city|metropolis|capital|town|village|hamlet|"
    r"countryside|suburbs?|farm|rural\s+area)|the\s+countryside))\b"
)
_PLACE = r"(?P<place>[A-Z][\w'’.-]*(?:,?\s+(?:de\s+|of\s+)?[A-Z][\w'’.-]*){0,3})"
_OCC = r"(?P<occ>[A-Za-z][A-Za-z -]{1,48}?)(?=\s*[,.;:!?]|\s+(?i:at|in|for|and|with|who|where|since|from|on|by)\b|\s*$)"
# Words allowed before an occupation term ("a senior nurse"); anything else ("a keen cook",
# "a bit of a chef") makes the phrase a description rather than a job, and it is not checked.
QUALIFIERS = set(
    "senior junior head chief lead principal registered licensed certified qualified full-time "
    "professional freelance self-employed staff school high middle elementary primary secondary "
    "public private local hospital family general assistant associate criminal corporate tax "
    "defense defence trial commercial airline practicing practising".split()
)
_NOT_A_NAME = set(
    "monday tuesday wednesday thursday friday saturday sunday january february march april may june "
    "july august september october november december the not just here back sorry glad new so "
    "looking trying writing working wondering curious".split()
)


def _subject(names: list[str], pronouns: list[str]) -> str:
    options = [re.escape(n) for n in names] + pronouns + ["I"]
    return r"(?P<subj>\b(?i:" + "|".join(options) + r"))"


def _patterns(subj: str, third_person: bool) -> dict[str, list[re.Pattern[str]]]:
    age = [
        rf"{subj}(?i:{_BE}\s+(?:now\s+|currently\s+|just\s+)?an?\s+){_NUM}(?i:[- ]years?[- ]old)\b",
        rf"{subj}(?i:{_BE}\s+(?:now\s+|currently\s+|just\s+)?){_NUM}(?i:\s+years?\s+old)\b",
        rf"{subj}\s+(?i:(?:just|recently)\s+turned\s+){_NUM}\b",
        rf"(?i:\bat\s+){_NUM}(?i:\s+years\s+old)?,\s+{subj}(?i:{_BE})\b",
        r"(?P<subj>\b(?i:I\s+am|I'm|I’m))\s+(?P<n>\d{1,3})(?=\s*(?:[,.;!?]|and\b|$))",
    ]
    occupation = [
        rf"{subj}\s+(?i:(?:currently\s+)?(?:works|work)\s+as\s+an?\s+|(?:is|am|'s|’s|'m|’m)\s+working\s+as\s+an?\s+){_OCC}",
        rf"{subj}(?i:{_BE}\s+(?:now\s+|currently\s+)?an?\s+(?:\d{{1,3}}[- ]year[- ]old\s+)?){_OCC}",
        rf"(?P<subj>\b(?i:my))\s+(?i:(?:job|work|career)\s+as\s+an?\s+){_OCC}",
    ]
    location = [
        rf"{subj}\s+(?i:(?:currently\s+|now\s+|still\s+)?(?:lives?|resides?)\s+in\s+(?:the\s+)?){_PLACE}",
        rf"{subj}(?i:{_BE}\s+(?:now\s+|currently\s+)?(?:living|based|settled)\s+in\s+(?:the\s+)?){_PLACE}",
    ]
    name = [
        r"(?i:\bmy\s+name(?:\s+is|'s|’s))\s+" + _NAME_WORD,
        r"(?i:\b(?:hi|hello|hey)[,!]?\s+(?:I'm|I’m|I\s+am|this\s+is))\s+" + _NAME_WORD,
    ]
    if third_person:
        name += [
            r"(?P<subj>\b(?i:her|his|their))\s+(?i:name\s+is)\s+" + _NAME_WORD,
            r"^(?i:meet)\s+" + _NAME_WORD,
        ]
    birth_year = [rf"{subj}\s+(?i:was\s+born\s+(?:back\s+)?in\s+){_YEAR}"]
    children = [
        rf"{subj}\s+(?i:(?:has|have)\s+){_COUNT}\s+{_KIDS}",
        rf"{subj}(?i:{_BE}\s+(?:a\s+)?(?:proud\s+)?(?:mother|father|mom|mum|dad|parent)\s+of\s+){_COUNT}\b",
        rf"{subj}\s+(?i:(?:does\s+not|doesn't|doesn’t|do\s+not|don't|don’t)\s+have\s+(?:any\s+)?"
        r"(?P<n>)(?:children|kids))\b",
        r"(?P<subj>\b(?i:her|his|their|my))\s+" + _COUNT + r"\s+" + _KIDS,
    ]
    years_in_job = [
        rf"{subj}\s+(?i:(?:has|have|'s|’s|'ve|’ve)\s+(?:been\s+)?)(?P<what>(?i:work(?:ed|ing)|"
        rf"teach(?:ing)?|taught|an?\s)[^.;!?]{{0,60}}?)\b(?i:for\s+(?:the\s+(?:past|last)\s+)?){_NUM}"
        r"(?i:\s+years)\b",
    ]
    income = [
        rf"{subj}\s+(?i:(?:currently\s+|now\s+)?(?:earns?|makes?|takes\s+home|brings\s+in)\s+"
        rf"(?:about\s+|around\s+|roughly\s+|some\s+|just\s+)?){_MONEY}",
        r"(?P<subj>\b(?i:her|his|their|my))\s+(?i:(?:annual\s+|yearly\s+|monthly\s+|weekly\s+)?"
        r"(?:salary|income|pay|wage|earnings)\s+(?:is|was|of)\s+"
        r"(?:about\s+|around\s+|roughly\s+|some\s+|just\s+)?)" + _MONEY,
    ]
    settlement = [
        rf"{subj}\s+(?i:(?:currently\s+|now\s+|still\s+)?(?:lives?|resides?)\s+in|"
        rf"(?:is|am|'s|’s|'m|’m)\s+(?:now\s+)?(?:living|based)\s+in)\s+{_SETTLEMENT}",
    ]
    groups = {
        "age": age,
        "occupation": occupation,
        "location": location,
        "name": name,
        "birth_year": birth_year,
        "children": children,
        "years_in_job": years_in_job,
        "income": income,
        "settlement": settlement,
    }
    return {key: [re.compile(p) for p in group] for key, group in groups.items()}


def _number(text: str) -> int | None:
    text = text.lower()
    if text.isdigit():
        return int(text)
    if text in NUMBER_WORDS:
        return NUMBER_WORDS[text]
    if text in TENS:
        return TENS[text]
    parts = text.split("-")
    if (
        len(parts) == 2
        and parts[0] in TENS
        and parts[1] in NUMBER_WORDS
        and 0 < NUMBER_WORDS[parts[1]] < 10
    ):
        return TENS[parts[0]] + NUMBER_WORDS[parts[1]]
    return None


def _age_range(value: str) -> tuple[float, float] | None:
    numbers = re.findall(r"\d+(?:\.\d+)?", value)
    if not numbers:
        return None
    if len(numbers) >= 2 and re.search(r"\d\s*(?:-|–|to)\s*\d", value):
        return float(numbers[0]), float(numbers[1])
    return float(numbers[0]), float(numbers[0])


def _pronouns(gender: str | None) -> list[str]:
    g = (gender or "").lower()
    if re.search(r"\b(?:female|woman|f)\b", g):
        return ["she", "her"]
    if re.search(r"\b(?:male|man|m)\b", g):
        return ["he", "his"]
    return ["she", "he", "they", "her", "his", "their"]


def _occupation_terms(text: str) -> list[tuple[int, int, str, str]]:
    """(start, end, term, group) of known occupation words in `text`, the longest per end."""
    found = []
    low = text.lower()
    for group, terms in OCCUPATION_GROUPS.items():
        for term in terms:
            for m in re.finditer(rf"\b{re.escape(term)}s?\b", low):
                found.append((m.start(), m.end(), term, group))
    found.sort(key=lambda t: (t[1], -t[0]))  # by end; the longest term last among equals
    return found


def _stated_occupation(phrase: str) -> tuple[str, str] | None:
    """(term, group) when the phrase is a job title: qualifiers, then a known term, nothing else."""
    terms = _occupation_terms(phrase)
    if not terms:
        return None
    start, end, term, group = min(terms, key=lambda t: (t[0], -len(t[2])))
    before = re.findall(r"[\w-]+", phrase[:start].lower())
    after = re.sub(
        r"\b(?:now|currently|today|these days|full-time|full time)\b", "", phrase[end:]
    ).strip()
    if any(w not in QUALIFIERS for w in before) or after:
        return None
    return term, group


def _country_of(place: str) -> tuple[str | None, bool]:
    """(canonical country, is_city) for a place phrase, or (None, False) when unknown."""
    p = place.strip().rstrip(".,").lower()
    if p in _COUNTRY_ALIAS:
        return _COUNTRY_ALIAS[p], False
    if p in _CITY:
        return _CITY[p], True
    head = p.split(",")[0].strip()
    if head in _CITY:
        return _CITY[head], True
    return None, False


class _Facts:
    """The persona's known values; values a profile update replaced are accepted too."""

    def __init__(self, persona: dict, updates: list[dict]) -> None:
        def values(*leaves: str) -> list[tuple[str, str]]:
            found = attribute_values(persona, *leaves)
            for u in updates:
                path = str(u.get("path") or "")
                if path.rsplit(".", 1)[-1] in leaves:
                    found += [(path, str(u[key])) for key in ("old", "new") if u.get(key)]
            return found

        self.age = values("age")
        own = str(persona.get("name") or "").strip()
        self.names = ([("name", own)] if own else []) + values(
            "first_name", "given_name", "name", "full_name"
        )
        self.gender = next((v for _, v in values("gender", "sex")), None)
        self.occupation = values("occupation", "job", "job_title", "profession")
        self.city = values("city", "town")
        self.country = values("country")
        self.settlement = values("settlement")
        self.children = values("number_of_children")
        self.years_in_job = values("years_in_current_job", "years_worked", "years_in_job")
        self.income = values("annual_income")

    def name_tokens(self) -> list[str]:
        tokens = {t for _, v in self.names for t in re.findall(r"[^\W\d_]+", v) if len(t) > 1}
        return sorted(tokens, key=len, reverse=True)


def _same_name(stated: str, known: list[str]) -> bool:
    s = stated.lower()
    for k in (k.lower() for k in known):
        if s == k or s.startswith(k) or k.startswith(s) or (len(s) >= 3 and s[:3] == k[:3]):
            return True
    return False


@rule_critic(
    "attribute_consistency",
    kinds=("persona", "conversation"),
    defaults={
        "age_tolerance": 1,  # years, for the age and the birth year
        "years_tolerance": 1,  # years in the job
        "max_income_ratio": 3.16,  # stated/known income either way: half an order of magnitude
        "reference_year": 2025,  # "now" for a persona's birth year (a session: its own year)
        "check": [
            "age",
            "birth_year",
            "children",
            "years_in_job",
            "income",
            "occupation",
            "location",
            "settlement",
        ],
    },
)
def attribute_consistency(record: dict, ctx: CriticContext) -> CriticResult:
    """Stated age, birth year, children, years in the job, income, occupation, place and
    kind of settlement of the persona agree with its attributes (the name: identity.py)."""
    if ctx.kind == "persona":
        persona, updates = record, []
        units = text_units(record, "persona")
    else:  # the user simulator speaks as the persona, in the first person
        persona = ctx.persona(record.get("persona_id"))
        if persona is None:
            return ctx.ok()  # nothing to compare against
        updates = list(record.get("profile_updates") or [])
        units = text_units(record, "conversation", role="user")
    facts = _Facts(persona, updates)
    third_person = ctx.kind == "persona"
    pronouns = _pronouns(facts.gender) if third_person else []
    names = facts.name_tokens() if third_person else []
    checker = _Checker(
        facts,
        _patterns(
            _subject(names, [p for p in pronouns if p in ("she", "he", "they")]), third_person
        ),
        set(ctx.settings["check"]),
        ctx.settings["age_tolerance"],
        pronouns,
        dict(ctx.settings),
        _year(record.get("timestamp")) or ctx.settings["reference_year"],
    )
    for label, text in units:
        sents = ctx.sentences(text)
        for i, sentence in enumerate(sents):
            problem = checker.sentence(sentence, sents[i - 1] if i else "", first=i == 0)
            if problem:
                return ctx.fail(f"{problem} (in {label}: {sentence[:100]!r})")
    return ctx.ok()


class _Checker:
    def __init__(
        self,
        facts: _Facts,
        patterns: dict[str, list[re.Pattern[str]]],
        checks: set[str],
        tolerance: int,
        pronouns: list[str],
        settings: dict | None = None,
        year: int = 2025,
    ) -> None:
        self.facts, self.patterns, self.checks = facts, patterns, checks
        self.tolerance, self.pronouns = tolerance, pronouns
        self.settings, self.year = settings or {}, year

    def sentence(self, sentence: str, previous: str, first: bool) -> str | None:
        for kind in self.patterns:
            if kind not in self.checks:
                continue
            for k, pattern in enumerate(self.patterns[kind]):
                if kind == "name" and k == 3 and not first:
                    continue  # "Meet X" only opens a text
                for m in pattern.finditer(sentence):
                    if self._about_someone_else(m, sentence, previous):
                        continue
                    problem = getattr(self, kind)(m)
                    if problem:
                        return problem
        return None

    def _about_someone_else(self, m: re.Match[str], sentence: str, previous: str) -> bool:
        """A pronoun subject may stand for another person named just before it."""
        subj = (m.groupdict().get("subj") or "").lower()
        if subj not in ("she", "he", "they", "her", "his", "their"):
            return False
        if subj in ("her", "his", "their") and subj not in self.pronouns:
            return True
        return bool(OTHER_PEOPLE.search(previous) or OTHER_PEOPLE.search(sentence[: m.start()]))

    def age(self, m: re.Match[str]) -> str | None:
        n = _number(m.group("n"))
        if n is None or not self.facts.age:
            return None
        for _, value in self.facts.age:
            bounds = _age_range(value)
            if bounds is None or bounds[0] - self.tolerance <= n <= bounds[1] + self.tolerance:
                return None
        path, value = self.facts.age[0]
        return f"age_mismatch: text says {n}, {path} is {value!r}"

    def occupation(self, m: re.Match[str]) -> str | None:
        known = [v for _, v in self.facts.occupation]
        if not known or any(NOT_AN_OCCUPATION.search(v) for v in known):
            return None
        known_terms = [(t[2], t[3]) for v in known for t in _occupation_terms(v)]
        stated = _stated_occupation(m.group("occ"))
        if not known_terms or stated is None:
            return None
        term, group = stated
        if group in {g for _, g in known_terms}:
            return None
        if any(term in v.lower() for v in known) or any(t in term for t, _ in known_terms):
            return None
        path, value = self.facts.occupation[0]
        return f"occupation_mismatch: text says {term!r}, {path} is {value!r}"

    def location(self, m: re.Match[str]) -> str | None:
        place = m.group("place")
        country, is_city = _country_of(place)
        if country is None:
            return None
        known_countries = {c for _, v in self.facts.country for c in [_country_of(v)[0]] if c}
        known_cities = {v.split(",")[0].strip().lower() for _, v in self.facts.city}
        city_countries = {
            c for _, v in self.facts.city for c, city in [_country_of(v)] if c and city
        }
        head = place.split(",")[0].strip().lower()
        if is_city and head in known_cities:
            return None
        where = (self.facts.country or self.facts.city or [("", "")])[0]
        expected = known_countries or city_countries
        if expected and country not in expected:
            return f"location_mismatch: text says lives in {place!r}, {where[0]} is {where[1]!r}"
        if is_city and city_countries and head not in known_cities:
            where = self.facts.city[0]  # two cities we both know, and they differ
            return f"location_mismatch: text says lives in {place!r}, {where[0]} is {where[1]!r}"
        return None

    def name(self, m: re.Match[str]) -> str | None:
        stated = m.group("name")
        known = self.facts.name_tokens()
        if not known or stated.lower() in _NOT_A_NAME or _same_name(stated, known):
            return None
        path, value = self.facts.names[0]
        return f"name_mismatch: text says {stated!r}, {path} is {value!r}"

    def birth_year(self, m: re.Match[str]) -> str | None:
        if not self.facts.age:
            return None
        born = int(m.group("year"))
        for _, value in self.facts.age:
            bounds = _age_range(value)
            if bounds is None:
                return None
            # born in `born`: aged year - born - 1 before the birthday, year - born after it
            low, high = self.year - born - 1, self.year - born
            if low <= bounds[1] + self.tolerance and high >= bounds[0] - self.tolerance:
                return None
        path, value = self.facts.age[0]
        return (
            f"birth_year_mismatch: text says born in {born} (aged {self.year - born} in "
            f"{self.year}), {path} is {value!r}"
        )

    def children(self, m: re.Match[str]) -> str | None:
        stated = m.group("n") or "no"
        n = 0 if stated.lower() == "no" else _number(stated)
        if n is None or not self.facts.children:
            return None
        known = [_number(re.sub(r"\D", "", v) or "x") for _, v in self.facts.children]
        if n in known or None in known:
            return None
        path, value = self.facts.children[0]
        return f"children_mismatch: text says {n} children, {path} is {value!r}"

    def years_in_job(self, m: re.Match[str]) -> str | None:
        what = m.group("what").lower()
        if re.search(
            r"\b(?:mother|father|parent|married|widow|member|volunteer|retired|friends?)\b", what
        ):
            return None
        n = _number(m.group("n"))
        if n is None or not self.facts.years_in_job:
            return None
        tolerance = self.settings.get("years_tolerance", 1)
        for _, value in self.facts.years_in_job:
            bounds = _age_range(value)
            if bounds is None or bounds[0] - tolerance <= n <= bounds[1] + tolerance:
                return None
        path, value = self.facts.years_in_job[0]
        return f"years_in_job_mismatch: text says {n} years, {path} is {value!r}"

    def income(self, m: re.Match[str]) -> str | None:
        stated = _annual_dollars(m)
        if stated is None or not self.facts.income:
            return None
        limit = self.settings.get("max_income_ratio", 3.16)
        for _, value in self.facts.income:
            known = re.findall(r"\d+(?:\.\d+)?", value.replace(",", ""))
            if not known or float(known[0]) <= 0:
                return None
            ratio = stated / float(known[0])
            if 1 / limit <= ratio <= limit:
                return None
        path, value = self.facts.income[0]
        return (
            f"income_mismatch: text says {m.group(0).strip()!r} (about {stated:,.0f} a year), "
            f"{path} is {value!r}"
        )

    def settlement(self, m: re.Match[str]) -> str | None:
        stated = _settlement_class(m.group("kind"))
        for path, value in self.facts.settlement[:1]:
            known = _settlement_class(value)
            if stated and known and (stated, known) in _SETTLEMENT_CONFLICTS:
                return (
                    f"settlement_mismatch: text says lives in {m.group('kind')!r}, "
                    f"{path} is {value!r}"
                )
        return None


def _year(timestamp: object) -> int | None:
    year = getattr(timestamp, "year", None)
    if isinstance(year, int):
        return year
    found = re.match(r"\s*((?:19|20)\d{2})-", str(timestamp or ""))
    return int(found.group(1)) if found else None


_PERIODS = {"year": 1, "yr": 1, "annum": 1, "month": 12, "week": 52, "day": 250, "hour": 2000}
_MULTIPLIERS = {"k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6}


def _annual_dollars(m: re.Match[str]) -> float | None:
    """The yearly amount of a stated dollar income (no period said: a year)."""
    amount = m.group("amt") or m.group("amt2")
    if not amount:
        return None
    value = float(amount.replace(",", ""))
    mult = (m.group("mult") or m.group("mult2") or "").lower()
    value *= _MULTIPLIERS.get(mult, 1)
    return value * _PERIODS[(m.group("per") or "year").lower()]


# Kinds of settlement, from the taxonomies' values and the words a text uses.
def _settlement_class(text: str) -> str | None:
    t = text.lower()
    if re.search(r"village|hamlet|countryside|farm|rural", t):
        return "rural"
    if re.search(r"suburb", t):
        return "suburb"
    if re.search(
        r"\b(?:large|big|major|huge|busy|bustling|capital)\b.*\bcity\b|metropolis|capital", t
    ):
        return "big city"
    if re.search(r"\bcity\b", t):
        return "city"
    if re.search(r"\btown\b", t):
        return "town"
    return None


# (stated, known) pairs that contradict; a suburb, and a city for a town, contradict nothing.
_SETTLEMENT_CONFLICTS = {
    ("rural", "big city"),
    ("rural", "city"),
    ("big city", "rural"),
    ("city", "rural"),
    ("town", "big city"),
    ("big city", "town"),
}
