"""Who lives in the sandbox universe: the population mix and the per-industry economics.

:class:`PopulationMix` holds every fraction a universe draws from (industries, regions, sizes,
trajectories, defect and fraud rates); the defaults are sensible for a UK off-platform SME book.
The tables below it give each industry its seasonality, cost structure, energy use and VAT profile,
so that the accounts, VAT returns, meter readings and field surveys of one SME tell one story.

>>> mix = PopulationMix()
>>> round(sum(mix.trajectories.values()), 6)
1.0
>>> sorted(INDUSTRIES) == sorted(mix.industries)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Industry:
    """The economics of one industry, in the units the generator works in.

    ``seasonality`` is twelve monthly revenue multipliers (January first, mean 1). Ratios are shares
    of monthly revenue; day counts are the working-capital cycle; ``kwh_per_pound`` is electricity
    used per pound of turnover on top of a size-dependent base load.
    """

    seasonality: tuple[float, ...]
    cost_of_sales_ratio: float
    receivable_days: float
    inventory_days: float
    payable_days: float
    fixed_asset_months: float
    kwh_per_pound: float
    gas_share: float
    standard_rated_share: float
    customer_facing: bool
    holds_stock: bool
    trade_nouns: tuple[str, ...]


def _season(*values: float) -> tuple[float, ...]:
    array = np.asarray(values, dtype=float)
    return tuple(float(v) for v in array / array.mean())


INDUSTRIES: dict[str, Industry] = {
    "retail": Industry(
        seasonality=_season(0.85, 0.80, 0.90, 0.95, 1.00, 0.98, 1.00, 1.02, 0.97, 1.02, 1.15, 1.36),
        cost_of_sales_ratio=0.62,
        receivable_days=4,
        inventory_days=45,
        payable_days=30,
        fixed_asset_months=1.0,
        kwh_per_pound=0.05,
        gas_share=0.3,
        standard_rated_share=0.7,
        customer_facing=True,
        holds_stock=True,
        trade_nouns=("Stores", "Hardware", "Convenience", "Boutique", "Pharmacy"),
    ),
    "food_service": Industry(
        seasonality=_season(0.82, 0.85, 0.92, 0.98, 1.05, 1.10, 1.18, 1.15, 1.00, 0.95, 0.95, 1.05),
        cost_of_sales_ratio=0.34,
        receivable_days=2,
        inventory_days=6,
        payable_days=21,
        fixed_asset_months=1.5,
        kwh_per_pound=0.12,
        gas_share=0.7,
        standard_rated_share=0.8,
        customer_facing=True,
        holds_stock=True,
        trade_nouns=("Cafe", "Kitchen", "Bakery", "Diner", "Takeaway"),
    ),
    "manufacturing": Industry(
        seasonality=_season(0.95, 1.00, 1.05, 1.02, 1.03, 1.02, 0.98, 0.85, 1.02, 1.05, 1.05, 0.90),
        cost_of_sales_ratio=0.55,
        receivable_days=55,
        inventory_days=60,
        payable_days=45,
        fixed_asset_months=5.0,
        kwh_per_pound=0.2,
        gas_share=0.5,
        standard_rated_share=0.95,
        customer_facing=False,
        holds_stock=True,
        trade_nouns=("Engineering", "Fabrication", "Joinery", "Plastics", "Print"),
    ),
    "construction": Industry(
        seasonality=_season(0.80, 0.85, 0.95, 1.05, 1.10, 1.12, 1.12, 1.08, 1.05, 1.00, 0.95, 0.80),
        cost_of_sales_ratio=0.6,
        receivable_days=50,
        inventory_days=10,
        payable_days=40,
        fixed_asset_months=2.0,
        kwh_per_pound=0.01,
        gas_share=0.15,
        standard_rated_share=0.9,
        customer_facing=False,
        holds_stock=True,
        trade_nouns=("Builders", "Roofing", "Plumbing", "Electrical", "Groundworks"),
    ),
    "transport": Industry(
        seasonality=_season(0.92, 0.92, 0.98, 0.98, 1.00, 1.00, 0.98, 0.96, 1.00, 1.05, 1.10, 1.12),
        cost_of_sales_ratio=0.45,
        receivable_days=40,
        inventory_days=2,
        payable_days=30,
        fixed_asset_months=4.0,
        kwh_per_pound=0.02,
        gas_share=0.15,
        standard_rated_share=0.6,
        customer_facing=False,
        holds_stock=False,
        trade_nouns=("Haulage", "Couriers", "Logistics", "Taxis", "Removals"),
    ),
    "agriculture": Industry(
        seasonality=_season(0.70, 0.70, 0.80, 0.90, 1.00, 1.10, 1.20, 1.35, 1.30, 1.10, 0.95, 0.90),
        cost_of_sales_ratio=0.55,
        receivable_days=35,
        inventory_days=90,
        payable_days=45,
        fixed_asset_months=8.0,
        kwh_per_pound=0.08,
        gas_share=0.2,
        standard_rated_share=0.25,
        customer_facing=False,
        holds_stock=True,
        trade_nouns=("Farms", "Growers", "Dairy", "Nurseries", "Orchards"),
    ),
    "professional_services": Industry(
        seasonality=_season(0.90, 1.00, 1.08, 1.00, 1.02, 1.02, 0.98, 0.85, 1.02, 1.05, 1.05, 1.03),
        cost_of_sales_ratio=0.15,
        receivable_days=45,
        inventory_days=0,
        payable_days=20,
        fixed_asset_months=0.5,
        kwh_per_pound=0.02,
        gas_share=0.15,
        standard_rated_share=1.0,
        customer_facing=False,
        holds_stock=False,
        trade_nouns=("Accountants", "Consulting", "Design", "IT Services", "Surveyors"),
    ),
    "personal_services": Industry(
        seasonality=_season(0.88, 0.90, 0.98, 1.00, 1.02, 1.02, 1.00, 0.95, 0.98, 1.02, 1.05, 1.20),
        cost_of_sales_ratio=0.25,
        receivable_days=1,
        inventory_days=10,
        payable_days=20,
        fixed_asset_months=1.0,
        kwh_per_pound=0.06,
        gas_share=0.4,
        standard_rated_share=1.0,
        customer_facing=True,
        holds_stock=False,
        trade_nouns=("Hair Studio", "Barbers", "Fitness", "Laundry", "Beauty"),
    ),
    "wholesale": Industry(
        seasonality=_season(0.92, 0.92, 0.98, 0.98, 1.00, 1.00, 0.98, 0.96, 1.02, 1.06, 1.10, 1.08),
        cost_of_sales_ratio=0.78,
        receivable_days=40,
        inventory_days=50,
        payable_days=40,
        fixed_asset_months=1.0,
        kwh_per_pound=0.03,
        gas_share=0.25,
        standard_rated_share=0.65,
        customer_facing=False,
        holds_stock=True,
        trade_nouns=("Wholesale", "Supplies", "Distributors", "Trading", "Cash & Carry"),
    ),
}

REGIONS: dict[str, tuple[float, float]] = {
    "London": (51.507, -0.128),
    "South East": (51.270, -0.750),
    "South West": (50.960, -3.220),
    "East of England": (52.240, 0.410),
    "West Midlands": (52.480, -1.890),
    "East Midlands": (52.830, -1.330),
    "Yorkshire and the Humber": (53.800, -1.550),
    "North West": (53.480, -2.240),
    "North East": (54.970, -1.610),
    "Wales": (51.900, -3.500),
    "Scotland": (55.900, -3.900),
    "Northern Ireland": (54.600, -6.300),
}
"""Region name -> (latitude, longitude) of its commercial centre; firms scatter around it."""


@dataclass(frozen=True)
class SizeBand:
    """Typical monthly turnover (lognormal median and spread, in pounds) and headcount of a size band."""

    median_revenue: float
    revenue_sigma: float
    min_revenue: float
    max_revenue: float
    base_load_kwh: float
    base_gas_therms: float
    employees: tuple[int, int]


SIZE_BANDS: dict[str, SizeBand] = {
    "micro": SizeBand(15_000, 0.50, 3_000, 60_000, 300, 40, (1, 9)),
    "small": SizeBand(120_000, 0.50, 40_000, 600_000, 2_000, 250, (10, 49)),
    "medium": SizeBand(900_000, 0.40, 300_000, 5_000_000, 12_000, 1_200, (50, 249)),
}


@dataclass(frozen=True)
class Trajectory:
    """How an SME's business moves over its history, and the latent health band that drives it."""

    health_range: tuple[float, float]
    monthly_growth: float
    collapse_rate: float
    """Monthly revenue decline once a failing firm starts to collapse (0 for the others)."""


TRAJECTORIES: dict[str, Trajectory] = {
    "healthy": Trajectory((0.70, 0.95), 0.008, 0.0),
    "stable": Trajectory((0.50, 0.75), 0.000, 0.0),
    "declining": Trajectory((0.30, 0.55), -0.012, 0.0),
    "failing": Trajectory((0.05, 0.30), 0.000, 0.065),
}

NAME_PREFIXES = (
    "Riverside",
    "Northgate",
    "Oakfield",
    "Harbour",
    "Meadow",
    "Kingsway",
    "Station",
    "Victoria",
    "Crown",
    "Bridge",
    "Castle",
    "Elm Tree",
    "Hillside",
    "Market",
    "Parkside",
    "Willow",
    "Ashford",
    "Granite",
    "Copper",
    "Lantern",
    "Thistle",
    "Bramble",
    "Highfield",
    "Seaview",
    "Millbrook",
)
NAME_SUFFIXES = ("Ltd", "Ltd", "Limited", "& Sons", "LLP", "& Co")

AGENT_COUNT = 40
"""Field agents in the survey team (``agent_001`` ...); the pool does not depend on universe size."""


def _normalised(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items()}


@dataclass(frozen=True)
class PopulationMix:
    """Every fraction the universe draws from. Weights are normalised, so they need not sum to 1.

    Defect and fraud rates are per SME. ``copier_agents`` are the agent numbers who copy surveys
    instead of visiting: every SME assigned to one gets identical answers, notes and GPS.
    """

    industries: dict[str, float] = field(
        default_factory=lambda: {
            "retail": 0.20,
            "food_service": 0.14,
            "manufacturing": 0.08,
            "construction": 0.14,
            "transport": 0.07,
            "agriculture": 0.05,
            "professional_services": 0.14,
            "personal_services": 0.10,
            "wholesale": 0.08,
        }
    )
    regions: dict[str, float] = field(
        default_factory=lambda: {
            "London": 0.19,
            "South East": 0.15,
            "South West": 0.09,
            "East of England": 0.10,
            "West Midlands": 0.08,
            "East Midlands": 0.07,
            "Yorkshire and the Humber": 0.07,
            "North West": 0.10,
            "North East": 0.03,
            "Wales": 0.04,
            "Scotland": 0.06,
            "Northern Ireland": 0.02,
        }
    )
    size_bands: dict[str, float] = field(
        default_factory=lambda: {"micro": 0.70, "small": 0.25, "medium": 0.05}
    )
    trajectories: dict[str, float] = field(
        default_factory=lambda: {"healthy": 0.35, "stable": 0.35, "declining": 0.18, "failing": 0.12}
    )
    gap_rate: float = 0.06
    duplicate_rate: float = 0.04
    malformed_accounting_rate: float = 0.02
    malformed_utility_rate: float = 0.02
    malformed_survey_rate: float = 0.015
    inflated_books_rate: float = 0.04
    copier_agents: tuple[int, ...] = (13,)

    def __post_init__(self) -> None:
        for name, table, known in (
            ("industries", self.industries, INDUSTRIES),
            ("regions", self.regions, REGIONS),
            ("size_bands", self.size_bands, SIZE_BANDS),
            ("trajectories", self.trajectories, TRAJECTORIES),
        ):
            unknown = set(table) - set(known)
            if unknown:
                raise ValueError(
                    f"PopulationMix.{name}: unknown keys {sorted(unknown)}; known: {sorted(known)}"
                )
            if any(w < 0 for w in table.values()) or sum(table.values()) <= 0:
                raise ValueError(f"PopulationMix.{name}: weights must be non-negative with a positive sum")
            object.__setattr__(self, name, _normalised(table))
        bad_agents = [a for a in self.copier_agents if not 1 <= a <= AGENT_COUNT]
        if bad_agents:
            raise ValueError(f"PopulationMix.copier_agents: {bad_agents} outside 1..{AGENT_COUNT}")
