"""Built-in catalogues for conversations: session topics (tasks) and preference kinds.

A *topic* is a kind of task a user brings to an assistant (travel planning, writing help,
...), each with a few concrete requests. A *preference kind* is something a user states
in conversation and may change between sessions (favourite cuisine, exercise routine,
...): its values, the reasons a change happens, the reasons a change is undone, and what
an assistant would suggest to someone holding each value. Everything here is data; the
timeline (`personaloom.timeline`) draws from it with a seeded RNG.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str  # what the `topic` column holds
    tasks: tuple[str, ...]  # concrete requests, phrased as what the user wants


@dataclass(frozen=True)
class PreferenceKind:
    """A preference a user can state and change.

    `reasons` and `revert_reasons` are clauses completing "... because <reason>"; they may
    use `{old}` and `{new}`. `suggestion` is what an assistant would recommend to someone
    with that value (`{value}`). A persona attribute stands for this preference when its
    leaf name contains one of `aliases` as whole words, when its value is one of `values`,
    or when it sits under one of `categories` (taxonomy root categories).
    """

    name: str
    label: str  # "favourite cuisine": reads in "the user's favourite cuisine"
    values: tuple[str, ...]
    reasons: tuple[str, ...]
    revert_reasons: tuple[str, ...]
    suggestion: str
    topics: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        """Path of this preference in the profile state when the persona lacks one."""
        return f"preferences.{self.name}"


TOPICS: tuple[Topic, ...] = (
    Topic(
        "recommendations",
        (
            "get a few suggestions for something to do this weekend",
            "find a book, film or series to enjoy next",
            "pick a gift for a close friend",
        ),
    ),
    Topic(
        "writing help",
        (
            "improve a short email to a colleague",
            "write a message congratulating a friend",
            "tighten a paragraph for a personal blog",
        ),
    ),
    Topic(
        "travel planning",
        (
            "plan a long weekend away",
            "put together a rough itinerary for a week-long trip",
            "decide where to go for the next holiday",
        ),
    ),
    Topic(
        "health",
        (
            "sleep better on weeknights",
            "build a sustainable exercise habit",
            "deal with an afternoon energy slump",
        ),
    ),
    Topic(
        "finance",
        (
            "set up a simple monthly budget",
            "decide whether a big purchase is worth it",
            "start saving for something specific",
        ),
    ),
    Topic(
        "study help",
        (
            "understand a tricky concept from a course",
            "plan revision for an upcoming exam",
            "learn the basics of a new language",
        ),
    ),
    Topic(
        "cooking",
        (
            "plan dinners for the coming week",
            "find a recipe for guests this weekend",
            "cook something quick after work",
        ),
    ),
    Topic(
        "shopping",
        (
            "choose between two products",
            "find a good pair of everyday shoes",
            "buy a small appliance for the kitchen",
        ),
    ),
    Topic(
        "emotional support",
        (
            "talk through a stressful week",
            "handle a disagreement with a friend",
            "feel less lonely after a move",
        ),
    ),
    Topic(
        "career advice",
        (
            "prepare for a job interview",
            "ask for a raise",
            "decide whether to change teams or jobs",
        ),
    ),
    Topic(
        "technical help",
        (
            "fix a slow laptop",
            "set up backups for photos",
            "choose a password manager",
        ),
    ),
    Topic(
        "hobbies",
        (
            "get better at a hobby",
            "find a new hobby to try",
            "find people to share a hobby with",
        ),
    ),
    Topic(
        "home and household",
        (
            "organise a small flat",
            "plan a weekly cleaning routine",
            "make a room feel cosier",
        ),
    ),
    Topic(
        "entertainment",
        (
            "plan a movie night",
            "find a podcast for the commute",
            "choose a concert or show to attend",
        ),
    ),
)

TOPIC_NAMES: tuple[str, ...] = tuple(t.name for t in TOPICS)


def _kind(**fields: object) -> PreferenceKind:
    return PreferenceKind(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})  # type: ignore[arg-type]


PREFERENCES: tuple[PreferenceKind, ...] = (
    _kind(
        name="cuisine",
        label="favourite cuisine",
        values=[
            "Italian",
            "Japanese",
            "Mexican",
            "Indian",
            "Thai",
            "Lebanese",
            "Ethiopian",
            "Korean",
        ],
        reasons=[
            "a new {new} restaurant opened nearby and became a weekly habit",
            "a friend taught them to cook {new} dishes",
            "they got tired of eating {old} food every week",
            "a trip abroad got them hooked on {new} food",
            "a cooking class introduced them to {new} cooking",
        ],
        revert_reasons=[
            "the novelty of {old} food wore off and they missed {new} dishes",
            "the {old} place nearby closed, so they went back to {new} food",
        ],
        suggestion="a {value} restaurant or a {value} recipe",
        topics=["cooking", "recommendations", "travel planning"],
        aliases=["cuisine", "favorite_food", "favourite_food"],
    ),
    _kind(
        name="music_genre",
        label="favourite music genre",
        values=[
            "jazz",
            "indie rock",
            "classical",
            "hip hop",
            "folk",
            "electronic",
            "country",
            "soul",
        ],
        reasons=[
            "a friend took them to a {new} concert that they loved",
            "a streaming playlist got them into {new}",
            "{old} started to feel repetitive",
            "they began learning an instrument used a lot in {new}",
            "a partner who loves {new} kept playing it at home",
        ],
        revert_reasons=[
            "{old} never really clicked and they returned to {new}",
            "an old {new} album reminded them why they loved it",
        ],
        suggestion="a {value} playlist or a {value} concert",
        topics=["entertainment", "recommendations", "hobbies"],
        aliases=["music", "musical"],
    ),
    _kind(
        name="travel_style",
        label="travel style",
        values=[
            "backpacking",
            "city breaks",
            "beach resorts",
            "road trips",
            "hiking trips",
            "slow travel by train",
        ],
        reasons=[
            "a tight budget this year made {new} more attractive",
            "a friend's stories about {new} were convincing",
            "the last trip of {old} was exhausting",
            "they wanted more time outdoors",
            "they wanted to fly less for environmental reasons",
        ],
        revert_reasons=[
            "{old} turned out to be less relaxing than hoped, so they went back to {new}",
            "they missed the ease of {new}",
        ],
        suggestion="a trip planned around {value}",
        topics=["travel planning", "recommendations", "finance"],
        aliases=["travel", "vacation", "holiday"],
    ),
    _kind(
        name="exercise",
        label="exercise routine",
        values=[
            "running",
            "yoga",
            "swimming",
            "cycling",
            "weight training",
            "pilates",
            "team football",
        ],
        reasons=[
            "a knee injury made {old} painful",
            "a new gym opened near their home",
            "a colleague invited them to try {new}",
            "they wanted something more social than {old}",
            "a doctor recommended {new}",
        ],
        revert_reasons=[
            "{old} never became a habit, so they went back to {new}",
            "the injury healed and they returned to {new}",
        ],
        suggestion="a weekly plan built around {value}",
        topics=["health", "hobbies", "shopping"],
        aliases=["exercise", "workout", "fitness", "sport", "sports"],
    ),
    _kind(
        name="diet",
        label="diet",
        values=["vegetarian", "vegan", "pescatarian", "low-carb", "omnivore", "Mediterranean diet"],
        reasons=[
            "a documentary changed how they think about food",
            "a doctor advised a {new} diet",
            "their partner went {new} and they joined in",
            "{old} eating left them feeling tired",
            "they wanted to cut their grocery bill",
        ],
        revert_reasons=[
            "being {old} was hard to keep up, so they went back to being {new}",
            "they missed {new} meals too much",
        ],
        suggestion="{value} meal ideas",
        topics=["cooking", "health", "shopping"],
        aliases=["diet", "dietary"],
    ),
    _kind(
        name="budget_stance",
        label="attitude to spending",
        values=[
            "saving aggressively",
            "spending on experiences",
            "buying quality that lasts",
            "hunting for bargains",
            "spending freely",
        ],
        reasons=[
            "an unexpected bill hit their savings",
            "a promotion gave them more room in the budget",
            "they decided to save for a home",
            "a friend's advice on {new} made sense to them",
            "they realised {old} was not making them happier",
        ],
        revert_reasons=[
            "{old} felt too restrictive, so they went back to {new}",
            "their finances settled again and they returned to {new}",
        ],
        suggestion="options that fit {value}",
        topics=["finance", "shopping", "travel planning"],
        aliases=["budget", "spending", "spending_style", "money_attitude"],
    ),
    _kind(
        name="communication_style",
        label="preferred communication style",
        values=[
            "short and direct answers",
            "detailed explanations",
            "friendly and casual",
            "formal and precise",
            "step-by-step lists",
        ],
        reasons=[
            "a busier schedule left less time for reading",
            "they started learning something complex and needed {new}",
            "they found {old} hard to follow",
            "a new job made them value {new}",
        ],
        revert_reasons=[
            "{old} felt unnatural, so they asked for {new} again",
            "they realised {new} suited them better after all",
        ],
        suggestion="an answer written as {value}",
        topics=["writing help", "technical help", "study help", "career advice"],
        aliases=["communication", "tone", "style_of_speech"],
    ),
    _kind(
        name="reading_genre",
        label="favourite kind of book",
        values=[
            "science fiction",
            "crime novels",
            "historical fiction",
            "biographies",
            "fantasy",
            "popular science",
            "poetry",
        ],
        reasons=[
            "a book club picked {new} and they loved it",
            "{old} started to feel predictable",
            "a long commute gave them time for {new}",
            "a friend lent them a great {new} book",
        ],
        revert_reasons=[
            "{old} did not hold their attention, so they went back to {new}",
            "a new release brought them back to {new}",
        ],
        suggestion="a well-reviewed book of {value}",
        topics=["recommendations", "entertainment", "study help"],
        aliases=["book", "books", "reading", "literature"],
    ),
    _kind(
        name="screen_genre",
        label="favourite kind of film or series",
        values=[
            "documentaries",
            "comedies",
            "thrillers",
            "animated films",
            "period dramas",
            "horror",
        ],
        reasons=[
            "a stressful stretch at work made them want lighter {new}",
            "a streaming service recommended {new} that hooked them",
            "{old} started to feel formulaic",
            "a friend started a weekly {new} night",
        ],
        revert_reasons=[
            "{old} got old quickly and they returned to {new}",
            "a new season of a favourite show brought them back to {new}",
        ],
        suggestion="a highly rated title among {value}",
        topics=["entertainment", "recommendations"],
        aliases=["film", "films", "movie", "movies", "series", "shows"],
    ),
    _kind(
        name="hobby",
        label="main hobby",
        values=[
            "gardening",
            "painting",
            "photography",
            "chess",
            "pottery",
            "birdwatching",
            "knitting",
            "rock climbing",
        ],
        reasons=[
            "a move to a new place made {old} hard to keep up",
            "a local {new} club welcomed them",
            "they were given {new} equipment as a birthday present",
            "{old} started to feel like a chore",
            "they wanted a hobby that gets them away from screens",
        ],
        revert_reasons=[
            "{old} did not stick, so they picked up {new} again",
            "they missed the people from their {new} group",
        ],
        suggestion="a {value} workshop or a {value} project for beginners",
        topics=["hobbies", "shopping", "recommendations"],
        aliases=["hobby", "hobbies", "pastime", "leisure", "craft"],
        categories=["hobbies", "leisure", "interests"],
    ),
    _kind(
        name="morning_drink",
        label="morning drink",
        values=["black coffee", "green tea", "flat white", "herbal tea", "hot chocolate", "matcha"],
        reasons=[
            "caffeine started to disturb their sleep",
            "a cafe on the way to work makes great {new}",
            "they wanted to drink less {old}",
            "a colleague got them into {new}",
        ],
        revert_reasons=[
            "{old} never felt like enough, so they went back to {new}",
            "they missed the taste of {new}",
        ],
        suggestion="a good place or a good way to make {value}",
        topics=["health", "shopping", "cooking"],
        aliases=["coffee", "tea", "morning_drink", "beverage"],
    ),
    _kind(
        name="work_setup",
        label="preferred way of working",
        values=[
            "fully remote",
            "in the office",
            "hybrid",
            "a coworking space",
            "a cafe with a laptop",
        ],
        reasons=[
            "a long commute wore them down",
            "working {old} felt isolating",
            "a new manager encouraged {new}",
            "they moved to a smaller flat",
        ],
        revert_reasons=[
            "{old} did not work out, so they returned to working {new}",
            "they missed the routine of working {new}",
        ],
        suggestion="tips for working {value}",
        topics=["career advice", "technical help", "home and household"],
        aliases=["remote", "work_style", "work_arrangement", "work_setup", "work_setting"],
    ),
    _kind(
        name="commute",
        label="way of getting around",
        values=["cycling", "walking", "public transport", "driving", "an e-scooter"],
        reasons=[
            "fuel prices went up",
            "a new bike lane made {new} safer",
            "they moved closer to work",
            "{old} became unreliable",
        ],
        revert_reasons=[
            "{old} was impractical in bad weather, so they went back to {new}",
            "they missed the convenience of {new}",
        ],
        suggestion="routes and gear for {value}",
        topics=["shopping", "travel planning", "health"],
        aliases=["commute", "transport", "transportation", "vehicle"],
    ),
    _kind(
        name="weekend_plans",
        label="favourite way to spend weekends",
        values=[
            "staying in and resting",
            "seeing friends",
            "exploring the outdoors",
            "visiting family",
            "going to museums",
            "working on side projects",
        ],
        reasons=[
            "a busy month left them craving more time for {new}",
            "new friends in town made {new} easier",
            "they felt they were spending too much time {old}",
            "the seasons changed",
        ],
        revert_reasons=[
            "{old} tired them out, so they went back to {new}",
            "they realised they missed {new}",
        ],
        suggestion="weekend ideas for {value}",
        topics=["recommendations", "emotional support", "hobbies"],
        aliases=["weekend", "weekends", "free_time"],
    ),
)

PREFERENCES_BY_NAME: dict[str, PreferenceKind] = {k.name: k for k in PREFERENCES}
