//! Geography shared by the services that place and fly drones: great-circle distances and
//! the geocoder port that turns a place name into a point.

use serde::{Deserialize, Serialize};

const EARTH_RADIUS_MILES: f64 = 3958.7613;

/// A point on the earth, in degrees and metres.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default)]
    pub altitude: f64,
}

impl Point {
    pub fn new(latitude: f64, longitude: f64) -> Self {
        Self { latitude, longitude, altitude: 0.0 }
    }

    /// Whether latitude is in [-90, 90] and longitude in [-180, 180].
    pub fn is_valid(&self) -> bool {
        self.latitude.is_finite()
            && self.longitude.is_finite()
            && self.altitude.is_finite()
            && (-90.0..=90.0).contains(&self.latitude)
            && (-180.0..=180.0).contains(&self.longitude)
    }
}

/// Great-circle (haversine) distance in statute miles.
pub fn distance_miles(a: Point, b: Point) -> f64 {
    let (lat1, lat2) = (a.latitude.to_radians(), b.latitude.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.longitude - a.longitude).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_MILES * h.sqrt().min(1.0).asin()
}

/// The point a `fraction` (0 to 1) of the way from `a` to `b` along the great circle, at an
/// altitude interpolated linearly. Where a drone is between two waypoints.
pub fn intermediate(a: Point, b: Point, fraction: f64) -> Point {
    let f = fraction.clamp(0.0, 1.0);
    let (lat1, lon1) = (a.latitude.to_radians(), a.longitude.to_radians());
    let (lat2, lon2) = (b.latitude.to_radians(), b.longitude.to_radians());
    // Angular distance by the haversine formula; tiny distances interpolate linearly.
    let h = ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    let delta = 2.0 * h.sqrt().min(1.0).asin();
    let altitude = a.altitude + (b.altitude - a.altitude) * f;
    if delta < 1e-12 {
        let lat = a.latitude + (b.latitude - a.latitude) * f;
        let lon = a.longitude + (b.longitude - a.longitude) * f;
        return Point { latitude: lat, longitude: lon, altitude };
    }
    let (wa, wb) = (((1.0 - f) * delta).sin() / delta.sin(), (f * delta).sin() / delta.sin());
    let x = wa * lat1.cos() * lon1.cos() + wb * lat2.cos() * lon2.cos();
    let y = wa * lat1.cos() * lon1.sin() + wb * lat2.cos() * lon2.sin();
    let z = wa * lat1.sin() + wb * lat2.sin();
    Point { latitude: z.atan2((x * x + y * y).sqrt()).to_degrees(), longitude: y.atan2(x).to_degrees(), altitude }
}

/// A rectangle of latitudes and longitudes the business serves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServiceArea {
    pub south: f64,
    pub west: f64,
    pub north: f64,
    pub east: f64,
}

impl std::fmt::Display for ServiceArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "latitude {} to {}, longitude {} to {}", self.south, self.north, self.west, self.east)
    }
}

impl ServiceArea {
    /// Greater Seattle, Fabrikam's home.
    pub const SEATTLE: ServiceArea = ServiceArea { south: 47.40, west: -122.45, north: 47.80, east: -122.10 };

    pub fn contains(&self, p: Point) -> bool {
        (self.south..=self.north).contains(&p.latitude) && (self.west..=self.east).contains(&p.longitude)
    }
}

/// Why a place string could not be turned into a point.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeocodeError {
    #[error("place is empty")]
    Empty,
    #[error("coordinates out of range: {0}")]
    OutOfRange(String),
}

/// The anti-corruption layer in front of a geocoding service: place name in, point out.
pub trait Geocoder: Send + Sync {
    fn locate(&self, place: &str) -> Result<Point, GeocodeError>;
}

/// Parses `"lat,lon"` or `"lat,lon,alt"`; `None` when `place` is not of that form.
pub fn parse_coordinates(place: &str) -> Option<Result<Point, GeocodeError>> {
    let parts: Vec<&str> = place.split(',').map(str::trim).collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let numbers: Option<Vec<f64>> = parts.iter().map(|p| p.parse::<f64>().ok()).collect();
    let numbers = numbers?;
    let point = Point { latitude: numbers[0], longitude: numbers[1], altitude: numbers.get(2).copied().unwrap_or(0.0) };
    Some(if point.is_valid() { Ok(point) } else { Err(GeocodeError::OutOfRange(place.to_owned())) })
}

/// The built-in geocoder: coordinates are taken as given; any other name maps to a fixed
/// point inside the service area derived from a hash of the normalised name, so the same
/// name is always the same place. It stands in for a real geocoding service, which would
/// implement [`Geocoder`] too.
#[derive(Debug, Clone, Copy)]
pub struct HashingGeocoder {
    pub area: ServiceArea,
}

impl Default for HashingGeocoder {
    fn default() -> Self {
        Self { area: ServiceArea::SEATTLE }
    }
}

impl Geocoder for HashingGeocoder {
    fn locate(&self, place: &str) -> Result<Point, GeocodeError> {
        let trimmed = place.trim();
        if trimmed.is_empty() {
            return Err(GeocodeError::Empty);
        }
        if let Some(parsed) = parse_coordinates(trimmed) {
            return parsed;
        }
        let normalised: String = trimmed.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        let hash = fnv1a(normalised.as_bytes());
        let lat_fraction = (hash >> 32) as f64 / f64::from(u32::MAX);
        let lon_fraction = (hash & 0xffff_ffff) as f64 / f64::from(u32::MAX);
        let a = self.area;
        Ok(Point::new(a.south + (a.north - a.south) * lat_fraction, a.west + (a.east - a.west) * lon_fraction))
    }
}

/// FNV-1a: stable across releases and platforms, unlike `std`'s hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intermediate_points_lie_on_the_way_in_proportion() {
        let (a, b) = (Point::new(47.58, -122.33), Point::new(47.71, -122.20));
        assert_eq!(intermediate(a, b, 0.0).latitude, a.latitude);
        let end = intermediate(a, b, 1.0);
        assert!((end.latitude - b.latitude).abs() < 1e-9 && (end.longitude - b.longitude).abs() < 1e-9);
        let total = distance_miles(a, b);
        for i in 1..10 {
            let f = f64::from(i) / 10.0;
            let p = intermediate(a, b, f);
            assert!((distance_miles(a, p) - f * total).abs() < 1e-6, "{f}");
            assert!((distance_miles(p, b) - (1.0 - f) * total).abs() < 1e-6, "{f}");
        }
        assert_eq!(intermediate(a, a, 0.5), a, "no way to go");
        assert_eq!(intermediate(a, b, 7.0).latitude, end.latitude, "clamped");
    }

    #[test]
    fn seattle_to_bellevue_is_about_seven_miles() {
        let seattle = Point::new(47.6062, -122.3321);
        let bellevue = Point::new(47.6101, -122.2015);
        let d = distance_miles(seattle, bellevue);
        assert!((6.0..7.5).contains(&d), "{d}");
    }

    #[test]
    fn same_name_same_place_inside_the_area() {
        let g = HashingGeocoder::default();
        let a = g.locate("Pike Place  Market").unwrap();
        let b = g.locate("pike place market").unwrap();
        assert_eq!(a, b);
        assert!(g.area.contains(a));
        assert_ne!(a, g.locate("Space Needle").unwrap());
    }

    #[test]
    fn coordinates_are_used_as_given() {
        let g = HashingGeocoder::default();
        assert_eq!(g.locate("47.6, -122.3").unwrap(), Point::new(47.6, -122.3));
        assert_eq!(g.locate("47.6,-122.3,120").unwrap().altitude, 120.0);
        assert!(matches!(g.locate("91,0"), Err(GeocodeError::OutOfRange(_))));
        assert_eq!(g.locate("  "), Err(GeocodeError::Empty));
    }
}
