"""The four MiniCity domains as data: what each stands in for, its camera and its layout statistics.

A domain differs from the others in *how* its streets are filmed and populated (camera height,
pitch, field of view, street widths, object frequencies and sizes), never in what makes a class
that class: roads are always the flat drivable band between the curbs, riders always sit on a
bicycle or motorcycle, buses are always long single boxes, and so on. Appearance is a separate
concern (``appearance.py``); weather is applied on top (``weather.py``).

The numbers are loosely modelled on the real datasets:

* GTA5: in-game dash camera about 1.5 m up, moderate field of view, wide Los-Angeles-like roads,
  many vehicles (trucks frequent), few pedestrians, tall and varied buildings.
* SYNTHIA-RAND-CITYSCAPES: random, often elevated viewpoints (up to several metres, pitched down),
  a very wide field of view (f ≈ 0.42·W), many pedestrians; no terrain, trucks or trains at all.
* Cityscapes: a car-mounted stereo rig 1.2 m up looking almost level (f ≈ 1.1·W), narrow German
  streets with parked cars, tree strips, bicycles; the ego-vehicle hood and a rectification border
  are visible and labelled void.
* ACDC: the same kind of "real" streets filmed with a GoPro behind the windscreen (f ≈ 0.75·W) in
  Zürich-like cities (more trams and trees), under fog, night, rain or snow.

The table below holds the generator 1.0 values; generator 1.1 multiplies the frequencies of the
rare vehicles and of riders by :data:`LEARNABILITY_FACTORS`, the same factor in every domain, so
that every class is learnable while the differences between the domains stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class CameraStats:
    """Ranges the per-frame camera is sampled from (uniform unless noted)."""

    height_m: tuple[float, float]
    pitch_deg: tuple[float, float]  # positive = looking down
    yaw_deg: tuple[float, float]
    roll_deg: tuple[float, float]
    focal_over_width: tuple[float, float]
    # Lateral camera position: "lane" = in a right-hand driving lane, "anywhere" = anywhere across
    # the road and sidewalks (SYNTHIA's random viewpoints).
    placement: str = "lane"
    principal_offset: tuple[float, float] = (0.0, 0.0)  # (cx, cy) offset as a fraction of W, H


@dataclass(frozen=True)
class LayoutStats:
    """Street layout and population statistics of a domain."""

    lanes_per_direction: tuple[int, ...]
    lane_width_m: tuple[float, float]
    sidewalk_width_m: tuple[float, float]
    tree_strip_prob: float  # a grass strip with trees between curb and sidewalk
    building_height_m: tuple[float, float]
    setback_prob: float  # a building lot has a front yard (terrain/ground) before the facade
    park_lot_prob: float  # a lot without building: lawn, trees, hedges, buildings far behind
    side_street_prob: float  # per frame: an intersection with a side street
    persons_per_10m: float  # on each sidewalk
    crossing_persons_prob: float  # persons on a zebra crossing at an intersection
    riders_per_frame: tuple[float, float]  # n = floor(uniform(lo, hi + 1)): integers lo..hi at factor 1
    motorcycle_share: float  # of riders
    moving_cars_per_lane_100m: float  # moving vehicles (cars, trucks, buses) per lane and 100 m
    parked_car_prob: float  # per parking slot (≈ 6 m) along the curb
    truck_share: float  # of moving vehicles
    bus_share: float
    train_prob: float  # per frame: a tram in the street
    traffic_light_prob: float  # per intersection / crossing
    signs_per_100m: float
    lamps_spacing_m: tuple[float, float]
    static_per_100m: float  # bins, benches, bollards (void "static")
    parked_bicycles_per_100m: float
    wall_prob: float
    fence_prob: float
    hedge_prob: float
    terrain: bool = True  # SYNTHIA has no terrain pixels
    trucks: bool = True
    trains: bool = True
    guard_rail_prob: float = 0.0
    void_ground_prob: float = 0.0  # front yards of bare ground (void "ground")
    parking_strip_prob: float = 0.5  # a parking lane along both curbs
    parking_bay_prob: float = 0.0  # painted parking bays (void "parking") on a parking lane
    sidewalk_tree_prob: float = 0.2  # per side without a grass strip: trees in the sidewalk
    vehicle_scale: float = 1.0
    person_scale: float = 1.0
    far_end_prob: float = 0.5  # the street ends in a facade (T junction) rather than the horizon


@dataclass(frozen=True)
class DomainSpec:
    name: str
    stands_for: str
    real_size: tuple[int, int]  # (width, height) of the real dataset's images
    camera: CameraStats
    layout: LayoutStats
    ego_hood: bool = False  # Cityscapes: bonnet labelled "ego vehicle" + rectification border
    cities: dict[str, tuple[str, ...]] = field(default_factory=dict)  # split → city/sequence names

    @property
    def aspect(self) -> float:
        return self.real_size[0] / self.real_size[1]


CITYSCAPES_TRAIN_CITIES = (
    "aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt", "hamburg", "hanover",
    "jena", "krefeld", "monchengladbach", "strasbourg", "stuttgart", "tubingen", "ulm", "weimar", "zurich",
)
CITYSCAPES_VAL_CITIES = ("frankfurt", "lindau", "munster")

# ACDC sequences are GoPro recordings (GOPRxxxx); each condition/split has its own sequences.
ACDC_CONDITIONS = ("fog", "night", "rain", "snow")


DOMAINS: dict[str, DomainSpec] = {
    "gta": DomainSpec(
        name="gta", stands_for="GTA5", real_size=(1914, 1052),
        camera=CameraStats(height_m=(1.35, 1.9), pitch_deg=(-1.0, 4.0), yaw_deg=(-4.0, 4.0),
                           roll_deg=(-0.5, 0.5), focal_over_width=(0.85, 1.0)),
        layout=LayoutStats(
            lanes_per_direction=(1, 2, 2, 3), lane_width_m=(3.3, 3.8), sidewalk_width_m=(3.0, 6.0),
            tree_strip_prob=0.25, building_height_m=(6.0, 40.0), setback_prob=0.35, park_lot_prob=0.15,
            side_street_prob=0.55, persons_per_10m=0.4, crossing_persons_prob=0.3, riders_per_frame=(0, 2),
            motorcycle_share=0.6, moving_cars_per_lane_100m=2.5, parked_car_prob=0.2, truck_share=0.08,
            bus_share=0.08, train_prob=0.04, traffic_light_prob=0.75, signs_per_100m=4.0,
            lamps_spacing_m=(22.0, 34.0), static_per_100m=3.0, parked_bicycles_per_100m=0.5,
            wall_prob=0.35, fence_prob=0.35, hedge_prob=0.25, guard_rail_prob=0.1, void_ground_prob=0.15,
            parking_strip_prob=0.4, parking_bay_prob=0.15, sidewalk_tree_prob=0.3, vehicle_scale=1.06,
            person_scale=1.04, far_end_prob=0.4,
        ),
    ),
    "synthia": DomainSpec(
        name="synthia", stands_for="SYNTHIA-RAND-CITYSCAPES", real_size=(1280, 760),
        camera=CameraStats(height_m=(1.5, 7.0), pitch_deg=(4.0, 24.0), yaw_deg=(-12.0, 12.0),
                           roll_deg=(-2.0, 2.0), focal_over_width=(0.40, 0.46), placement="anywhere"),
        layout=LayoutStats(
            lanes_per_direction=(1, 1, 2), lane_width_m=(3.0, 3.6), sidewalk_width_m=(3.0, 6.0),
            tree_strip_prob=0.0, building_height_m=(8.0, 30.0), setback_prob=0.1, park_lot_prob=0.1,
            side_street_prob=0.6, persons_per_10m=1.0, crossing_persons_prob=0.7, riders_per_frame=(0, 3),
            motorcycle_share=0.4, moving_cars_per_lane_100m=3.0, parked_car_prob=0.25, truck_share=0.0,
            bus_share=0.1, train_prob=0.0, traffic_light_prob=0.8, signs_per_100m=5.0,
            lamps_spacing_m=(15.0, 25.0), static_per_100m=2.0, parked_bicycles_per_100m=1.0,
            wall_prob=0.35, fence_prob=0.35, hedge_prob=0.3, terrain=False, trucks=False, trains=False,
            parking_strip_prob=0.5, parking_bay_prob=0.1, sidewalk_tree_prob=0.6, vehicle_scale=1.0,
            person_scale=1.0, far_end_prob=0.6,
        ),
    ),
    "cityscapes": DomainSpec(
        name="cityscapes", stands_for="Cityscapes", real_size=(2048, 1024),
        camera=CameraStats(height_m=(1.18, 1.26), pitch_deg=(0.0, 2.5), yaw_deg=(-2.5, 2.5),
                           roll_deg=(-0.7, 0.7), focal_over_width=(1.05, 1.15), principal_offset=(0.0, -0.02)),
        layout=LayoutStats(
            lanes_per_direction=(1, 1, 1, 2), lane_width_m=(2.9, 3.4), sidewalk_width_m=(3.0, 5.5),
            tree_strip_prob=0.4, building_height_m=(9.0, 24.0), setback_prob=0.35, park_lot_prob=0.2,
            side_street_prob=0.5, persons_per_10m=0.8, crossing_persons_prob=0.4, riders_per_frame=(0, 3),
            motorcycle_share=0.2, moving_cars_per_lane_100m=1.6, parked_car_prob=0.4, truck_share=0.05,
            bus_share=0.05, train_prob=0.05, traffic_light_prob=0.7, signs_per_100m=6.0,
            lamps_spacing_m=(18.0, 30.0), static_per_100m=5.0, parked_bicycles_per_100m=2.0,
            wall_prob=0.4, fence_prob=0.45, hedge_prob=0.3, guard_rail_prob=0.15, void_ground_prob=0.3,
            parking_strip_prob=0.55, parking_bay_prob=0.35, sidewalk_tree_prob=0.3, vehicle_scale=1.0,
            person_scale=1.0, far_end_prob=0.5,
        ),
        ego_hood=True,
        cities={"train": CITYSCAPES_TRAIN_CITIES, "val": CITYSCAPES_VAL_CITIES},
    ),
    "acdc": DomainSpec(
        name="acdc", stands_for="ACDC", real_size=(1920, 1080),
        camera=CameraStats(height_m=(1.35, 1.55), pitch_deg=(0.5, 4.0), yaw_deg=(-3.0, 3.0),
                           roll_deg=(-1.0, 1.0), focal_over_width=(0.7, 0.8)),
        layout=LayoutStats(
            lanes_per_direction=(1, 1, 2), lane_width_m=(2.9, 3.4), sidewalk_width_m=(2.0, 4.0),
            tree_strip_prob=0.45, building_height_m=(9.0, 22.0), setback_prob=0.3, park_lot_prob=0.25,
            side_street_prob=0.5, persons_per_10m=0.5, crossing_persons_prob=0.3, riders_per_frame=(0, 2),
            motorcycle_share=0.25, moving_cars_per_lane_100m=1.6, parked_car_prob=0.4, truck_share=0.06,
            bus_share=0.06, train_prob=0.12, traffic_light_prob=0.7, signs_per_100m=6.0,
            lamps_spacing_m=(18.0, 30.0), static_per_100m=4.0, parked_bicycles_per_100m=1.0,
            wall_prob=0.4, fence_prob=0.45, hedge_prob=0.35, guard_rail_prob=0.2, void_ground_prob=0.3,
            parking_strip_prob=0.5, parking_bay_prob=0.3, sidewalk_tree_prob=0.3, vehicle_scale=1.0,
            person_scale=0.98, far_end_prob=0.5,
        ),
    ),
}


# Generator 1.1: rare classes made learnable (docs/minicity_generator.md). The 1.0 statistics above
# are multiplied by the same factor in every domain, so all domains change alike and the
# differences between them (camera, layout statistics, class frequencies relative to each other)
# stay as they were; a zero stays zero (SYNTHIA has no trucks or trains, like the real one).
# ``riders_per_frame`` scales both ends of its range, hence the mean number of riders per frame.
LEARNABILITY_FACTORS: dict[str, float] = {
    "truck_share": 1.8,
    "bus_share": 2.2,
    "train_prob": 3.0,
    "riders_per_frame": 1.25,
}


def _learnable(layout: LayoutStats, factors: dict[str, float]) -> LayoutStats:
    """``layout`` with ``factors`` applied. The extra trucks and buses join the traffic rather than
    replace cars: the moving vehicles per lane grow so that the cars per lane stay as they were."""
    def scale(value, factor):
        return tuple(v * factor for v in value) if isinstance(value, tuple) else value * factor

    scaled = replace(layout, **{name: scale(getattr(layout, name), f) for name, f in factors.items()})

    def car_share(lay: LayoutStats) -> float:
        return 1.0 - (lay.truck_share if lay.trucks else 0.0) - lay.bus_share

    return replace(scaled, moving_cars_per_lane_100m=layout.moving_cars_per_lane_100m * car_share(layout)
                   / car_share(scaled))


DOMAINS = {name: replace(spec, layout=_learnable(spec.layout, LEARNABILITY_FACTORS))
           for name, spec in DOMAINS.items()}


def domain_image_size(domain: str, cityscapes_size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of ``domain`` given the Cityscapes-domain size: same width, the real dataset's aspect
    ratio, height rounded to an even number (GTA5 at width 512 → 282×512)."""
    height, width = cityscapes_size
    if domain == "cityscapes":
        return height, width
    aspect = DOMAINS[domain].aspect
    return max(2, 2 * round(width / aspect / 2)), width
