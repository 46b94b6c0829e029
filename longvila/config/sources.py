"""SlimPajama's seven sources, their original token mix and median document lengths.

The mix and the medians are Fu et al. 2024's (`SLIMPAJAMA_ORIGINAL_MIX`, `MEDIUM_LENGTH`,
FranxYao/Long-Context-Data-Engineering); see `../shared/reference/WORKFLOW.md` §7.1. The table lives in the
config package because `pack.mix` is checked against it; `longvila.data` (corpus, reader, packing) reads it
from here too.

    from longvila.config.sources import ORIGINAL_MIX, SOURCES
"""

SOURCES = (
    "RedPajamaCommonCrawl",
    "RedPajamaC4",
    "RedPajamaGithub",
    "RedPajamaArXiv",
    "RedPajamaBook",
    "RedPajamaWikipedia",
    "RedPajamaStackExchange",
)

ORIGINAL_MIX = {
    "RedPajamaCommonCrawl": 0.534,
    "RedPajamaC4": 0.266,
    "RedPajamaGithub": 0.050,
    "RedPajamaArXiv": 0.043,
    "RedPajamaBook": 0.041,
    "RedPajamaWikipedia": 0.034,
    "RedPajamaStackExchange": 0.032,
}

# Median document length per source, in tokens.
MEDIAN_TOKENS = {
    "RedPajamaC4": 315,
    "RedPajamaCommonCrawl": 1066,
    "RedPajamaStackExchange": 507,
    "RedPajamaWikipedia": 409,
    "RedPajamaGithub": 520,
    "RedPajamaArXiv": 14_565,
    "RedPajamaBook": 121_602,
}
