"""Partitions for nearby voice across nodes (``groups.nearby.partition``): pure, no loop."""

from __future__ import annotations

import math

import pytest
from h3.api import basic_str as h3

from groups.geo import destination, haversine_m
from groups.nearby.partition import (
    PARTITION_RESOLUTION,
    REACH_M,
    distance_to_cell_m,
    partition_of,
    partitions_near,
    topic,
)

CHAMONIX = (45.8326, 6.8652)


def across_a_line(lat: float, lon: float, apart_m: float) -> tuple[tuple[float, float],
                                                                   tuple[float, float]]:
    """Two points ``apart_m`` apart on either side of the middle of an edge of the
    partition holding (lat, lon): the first inside it, the second in its neighbour."""
    cell = partition_of(lat, lon)
    (alat, alon), (blat, blon) = h3.cell_to_boundary(cell)[:2]
    mid = ((alat + blat) / 2, (alon + blon) / 2)
    clat, clon = h3.cell_to_latlng(cell)
    inward = math.degrees(math.atan2(
        math.radians(clon - mid[1]) * math.cos(math.radians(mid[0])),
        math.radians(clat - mid[0])))
    inside = destination(*mid, inward, apart_m / 2)
    outside = destination(*mid, inward + 180.0, apart_m / 2)
    return inside, outside


def test_two_points_100_m_apart_across_a_line_are_in_neighbouring_partitions() -> None:
    inside, outside = across_a_line(*CHAMONIX, 100.0)
    assert haversine_m(*inside, *outside) == pytest.approx(100.0, abs=0.5)
    home, other = partition_of(*inside), partition_of(*outside)
    assert home != other and h3.are_neighbor_cells(home, other)
    assert h3.get_resolution(home) == PARTITION_RESOLUTION
    # each one's node listens to the other's partition: the line is not audible
    assert partitions_near(*inside) >= {home, other}
    assert partitions_near(*outside) >= {home, other}
    assert distance_to_cell_m(*inside, other) == pytest.approx(50.0, abs=2.0)
    assert distance_to_cell_m(*inside, home) == 0.0


@pytest.mark.parametrize(("from_line_m", "neighbour_listened"), [
    (50.0, True), (1_000.0, True), (REACH_M - 50.0, True), (REACH_M + 50.0, False),
    (4_000.0, False),
])
def test_a_neighbour_is_listened_to_only_within_reach_of_its_line(
        from_line_m: float, neighbour_listened: bool) -> None:
    inside, outside = across_a_line(*CHAMONIX, 2 * from_line_m)
    near = partitions_near(*inside)
    assert partition_of(*inside) in near
    assert (partition_of(*outside) in near) is neighbour_listened


def test_the_middle_of_a_partition_listens_to_it_alone() -> None:
    cell = partition_of(*CHAMONIX)
    assert partitions_near(*h3.cell_to_latlng(cell)) == {cell}


@pytest.mark.parametrize("where", [(0.0, 179.999), (0.0, -179.999), (78.2, 15.6),
                                   (-33.86, 151.21)])
def test_near_partitions_cover_every_point_within_reach(where: tuple[float, float]) -> None:
    """Brute force: points all around within the largest radius fall in a listened partition."""
    near = partitions_near(*where)
    for bearing in range(0, 360, 15):
        for metres in (100.0, 1_000.0, 2_000.0):
            assert partition_of(*destination(*where, float(bearing), metres)) in near


def test_a_reach_beyond_the_first_ring_is_refused() -> None:
    with pytest.raises(ValueError, match="beyond the first ring"):
        partitions_near(*CHAMONIX, reach_m=50_000.0)


def test_topic_names_the_partition() -> None:
    assert topic("851f9c4ffffffff") == "nearby:851f9c4ffffffff"
