//! Gateway aggregation: `GET /api/invoices?ownerId=&year=&month=` asks the delivery summary,
//! the package summary and the drone utilization in parallel (as the caller) and prices them
//! into one invoice. A part that fails makes the whole answer a problem naming that part: 503
//! when its service is down or overloaded, 502 when it answers something unusable.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use contracts::delivery::DeliveriesSummary;
use contracts::drone::DroneUtilization;
use contracts::package::PackageSummary;
use platform::Problem;
use platform::client::encode_segment;
use platform::query::Month;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What each billed quantity costs (in `currency`). Every price is a flag; see README
/// "Invoices" for the defaults.
#[derive(Debug, Clone, clap::Args)]
pub struct PriceList {
    /// Invoice price of one delivery.
    #[arg(long = "invoice-price-per-delivery", env = "FABRIKAM_INVOICE_PRICE_PER_DELIVERY", default_value_t = 5.0)]
    pub per_delivery: f64,
    /// Invoice price of one kilogram of packages.
    #[arg(long = "invoice-price-per-kg", env = "FABRIKAM_INVOICE_PRICE_PER_KG", default_value_t = 0.5)]
    pub per_kg: f64,
    /// Invoice price of one mile flown.
    #[arg(long = "invoice-price-per-mile", env = "FABRIKAM_INVOICE_PRICE_PER_MILE", default_value_t = 1.2)]
    pub per_mile: f64,
    /// Invoice price of one hour a drone is assigned.
    #[arg(
        long = "invoice-price-per-drone-hour",
        env = "FABRIKAM_INVOICE_PRICE_PER_DRONE_HOUR",
        default_value_t = 10.0
    )]
    pub per_drone_hour: f64,
    /// Currency code printed on invoices.
    #[arg(long = "invoice-currency", env = "FABRIKAM_INVOICE_CURRENCY", default_value = "USD")]
    pub currency: String,
}

impl Default for PriceList {
    fn default() -> Self {
        Self { per_delivery: 5.0, per_kg: 0.5, per_mile: 1.2, per_drone_hour: 10.0, currency: "USD".to_owned() }
    }
}

/// The three figures an invoice is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub deliveries: u64,
    pub package_weight: f64,
    pub traveled_miles: f64,
    pub assigned_hours: f64,
}

/// One month's invoice for one owner.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Invoice {
    pub owner_id: String,
    pub year: i32,
    pub month: u32,
    pub currency: String,
    pub deliveries: u64,
    pub total_package_weight: f64,
    pub traveled_miles: f64,
    pub assigned_hours: f64,
    pub lines: Vec<InvoiceLine>,
    pub total: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceLine {
    pub item: &'static str,
    pub quantity: f64,
    pub unit_price: f64,
    pub amount: f64,
}

/// Prices `usage`; each line is rounded to cents and the total is the sum of the lines.
pub fn price(owner_id: &str, month: Month, usage: &Usage, prices: &PriceList) -> Invoice {
    let line = |item, quantity: f64, unit_price: f64| {
        let cents = (quantity * unit_price * 100.0).round() as i64;
        (InvoiceLine { item, quantity, unit_price, amount: cents as f64 / 100.0 }, cents)
    };
    let lines = [
        line("deliveries", usage.deliveries as f64, prices.per_delivery),
        line("package weight (kg)", usage.package_weight, prices.per_kg),
        line("miles flown", usage.traveled_miles, prices.per_mile),
        line("drone hours", usage.assigned_hours, prices.per_drone_hour),
    ];
    let total_cents: i64 = lines.iter().map(|(_, cents)| cents).sum();
    Invoice {
        owner_id: owner_id.to_owned(),
        year: month.year,
        month: month.month,
        currency: prices.currency.clone(),
        deliveries: usage.deliveries,
        total_package_weight: usage.package_weight,
        traveled_miles: usage.traveled_miles,
        assigned_hours: usage.assigned_hours,
        lines: lines.into_iter().map(|(line, _)| line).collect(),
        total: total_cents as f64 / 100.0,
    }
}

/// Where the three parts come from.
#[derive(Debug, Clone)]
pub struct Sources {
    pub delivery: String,
    pub package: String,
    pub dronescheduler: String,
}

/// Asks the three services for `query`'s owner and month, in parallel, with `headers` (the
/// caller's signed identity) on each call, and prices the answers.
pub async fn invoice(
    client: &reqwest::Client,
    sources: &Sources,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    timeout: Duration,
    prices: &PriceList,
) -> Result<Invoice, Problem> {
    let owner_id = platform::query::required(query, "ownerId")?.trim().to_owned();
    let month = platform::query::month(query)?;
    let period = format!("year={}&month={}", month.year, month.month);
    let owner_query = format!("ownerId={}&{period}", encode_segment(&owner_id));
    let deliveries = format!("{}/api/deliveries/summary?{owner_query}", sources.delivery.trim_end_matches('/'));
    let packages = format!(
        "{}/api/packages/summary/{}?{period}",
        sources.package.trim_end_matches('/'),
        encode_segment(&owner_id)
    );
    let utilization =
        format!("{}/api/dronedeliveries/utilization?{owner_query}", sources.dronescheduler.trim_end_matches('/'));
    let (deliveries, packages, utilization) = tokio::join!(
        part::<DeliveriesSummary>(client, "deliveries", "delivery", deliveries, headers, timeout, false),
        part::<PackageSummary>(client, "packages", "package", packages, headers, timeout, false),
        part::<DroneUtilization>(client, "utilization", "dronescheduler", utilization, headers, timeout, true),
    );
    let failures: Vec<Problem> = [deliveries.as_ref().err(), packages.as_ref().err(), utilization.as_ref().err()]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    if !failures.is_empty() {
        return Err(combine(failures));
    }
    let (deliveries, packages, utilization) =
        (deliveries.expect("checked"), packages.expect("checked"), utilization.expect("checked"));
    // The scheduler answers 404 for a month without flights: nothing flown, nothing billed.
    let utilization = utilization.unwrap_or(DroneUtilization { traveled_miles: 0.0, assigned_hours: 0.0 });
    let usage = Usage {
        deliveries: deliveries.map_or(0, |d| d.count),
        package_weight: packages.map_or(0.0, |p| p.total_weight),
        traveled_miles: utilization.traveled_miles,
        assigned_hours: utilization.assigned_hours,
    };
    Ok(price(&owner_id, month, &usage, prices))
}

/// One part of the invoice: `Ok(None)` for a 404 when `absent_is_zero`.
async fn part<T: DeserializeOwned>(
    client: &reqwest::Client,
    part: &'static str,
    service: &'static str,
    url: String,
    headers: &HeaderMap,
    timeout: Duration,
    absent_is_zero: bool,
) -> Result<Option<T>, Problem> {
    let started = std::time::Instant::now();
    let request = client.get(url).headers(headers.clone()).timeout(timeout);
    let result = platform::client::send(request).await;
    let outcome = match &result {
        Ok(response) if response.status().is_success() => "ok",
        Ok(response) if response.status().is_client_error() => "ok",
        _ => "error",
    };
    metrics::counter!(
        "downstream_calls_total",
        "service" => crate::SERVICE,
        "downstream" => service,
        "outcome" => outcome
    )
    .increment(1);
    metrics::histogram!(
        "downstream_call_duration_seconds",
        "service" => crate::SERVICE,
        "downstream" => service,
        "method" => "GET",
        "outcome" => result.as_ref().map_or("transport_error", |r| platform::metrics::status_class(r.status().as_u16()))
    )
    .record(started.elapsed().as_secs_f64());
    let down = |why: String| {
        let mut problem = Problem::unavailable(format!("the invoice's {part} part is unavailable: {why}"), 1);
        problem.errors.insert(part.to_owned(), why);
        problem
    };
    let bad = |why: String| {
        let mut problem = Problem::new(StatusCode::BAD_GATEWAY, format!("the invoice's {part} part failed: {why}"));
        problem.errors.insert(part.to_owned(), why);
        problem
    };
    let response = match result {
        Ok(response) => response,
        Err(err) if err.is_timeout() => return Err(down(format!("the {service} service did not answer in time"))),
        Err(_) => return Err(down(format!("the {service} service is unreachable"))),
    };
    let status = response.status();
    if status == StatusCode::NOT_FOUND && absent_is_zero {
        return Ok(None);
    }
    if matches!(status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS | StatusCode::GATEWAY_TIMEOUT) {
        return Err(down(format!("the {service} service answered {status}")));
    }
    if !status.is_success() {
        return Err(bad(format!("the {service} service answered {status}")));
    }
    response
        .json::<T>()
        .await
        .map(Some)
        .map_err(|e| bad(format!("the {service} service's answer is not understood: {e}")))
}

/// One problem for every failed part: 503 if any part is down (retrying may help), else 502.
fn combine(failures: Vec<Problem>) -> Problem {
    let status = if failures.iter().any(|p| p.status == 503) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_GATEWAY
    };
    let details: Vec<String> = failures.iter().filter_map(|p| p.detail.clone()).collect();
    let errors: BTreeMap<String, String> = failures.into_iter().flat_map(|p| p.errors).collect();
    let mut problem = Problem::new(status, details.join("; "));
    problem.errors = errors;
    if status == StatusCode::SERVICE_UNAVAILABLE {
        problem.retry_after_secs = Some(1);
    }
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_each_line_in_cents_and_sums_them() {
        let usage = Usage { deliveries: 3, package_weight: 12.345, traveled_miles: 10.0, assigned_hours: 0.5 };
        let invoice = price("o1", Month { year: 2026, month: 11 }, &usage, &PriceList::default());
        let amounts: Vec<f64> = invoice.lines.iter().map(|l| l.amount).collect();
        assert_eq!(amounts, vec![15.0, 6.17, 12.0, 5.0]);
        assert_eq!(invoice.total, 38.17);
        assert_eq!(invoice.deliveries, 3);
    }

    #[test]
    fn any_part_down_is_a_503_naming_every_failed_part() {
        let mut down = Problem::unavailable("the invoice's packages part is unavailable: x", 1);
        down.errors.insert("packages".into(), "x".into());
        let mut bad = Problem::new(StatusCode::BAD_GATEWAY, "the invoice's deliveries part failed: y");
        bad.errors.insert("deliveries".into(), "y".into());
        let combined = combine(vec![bad.clone(), down]);
        assert_eq!(combined.status, 503);
        assert_eq!(combined.errors.len(), 2);
        assert_eq!(combine(vec![bad]).status, 502);
    }
}
