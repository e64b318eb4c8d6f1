//! The agent's request-latency histogram (`knit_agent_request_duration_seconds`, Prometheus
//! text as `--metrics` serves it): parsed per method, subtracted between two scrapes, added up
//! over methods, and read as quantiles the way Prometheus's `histogram_quantile` does (linear
//! inside the bucket the rank falls in; the bucket's upper bound comes with it, since that is
//! all a histogram really knows).

use std::collections::BTreeMap;

/// Per method: cumulative (upper bound in s, count) of the request-latency histogram.
pub type Hist = BTreeMap<String, Vec<(f64, f64)>>;

pub fn parse_hist(text: &str) -> Hist {
    let mut h = Hist::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("knit_agent_request_duration_seconds_bucket{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let (mut method, mut le) = (None, None);
        for kv in labels.split(',') {
            if let Some((k, v)) = kv.split_once('=') {
                let v = v.trim_matches('"');
                match k {
                    "method" => method = Some(v.to_string()),
                    "le" => le = v.parse::<f64>().ok(),
                    _ => {}
                }
            }
        }
        let count = value.split_whitespace().next().and_then(|v| v.parse().ok());
        if let (Some(m), Some(le), Some(c)) = (method, le, count) {
            h.entry(m).or_default().push((le, c));
        }
    }
    for b in h.values_mut() {
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
    }
    h
}

/// `after - before`, bucket by bucket.
pub fn diff(after: &Hist, before: &Hist) -> Hist {
    after
        .iter()
        .map(|(m, b)| {
            let old = before.get(m);
            let d = b
                .iter()
                .map(|&(le, c)| {
                    let was = old
                        .and_then(|o| o.iter().find(|x| x.0 == le))
                        .map_or(0.0, |x| x.1);
                    (le, c - was)
                })
                .collect();
            (m.clone(), d)
        })
        .filter(|(_, b): &(String, Vec<(f64, f64)>)| b.last().is_some_and(|x| x.1 > 0.0))
        .collect()
}

/// The `q` quantile of cumulative buckets: (interpolated inside its bucket, its upper bound).
pub fn quantile(b: &[(f64, f64)], q: f64) -> Option<(f64, f64)> {
    let total = b.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for &(le, c) in b {
        if c >= rank {
            if le.is_infinite() {
                return Some((lo, le));
            }
            let frac = if c > below {
                (rank - below) / (c - below)
            } else {
                1.0
            };
            return Some((lo + (le - lo) * frac, le));
        }
        (lo, below) = (le, c);
    }
    None
}

/// The histograms of all methods added up.
pub fn total(h: &Hist) -> Vec<(f64, f64)> {
    let mut sum: Vec<(f64, f64)> = Vec::new();
    for b in h.values() {
        for &(le, c) in b {
            match sum.iter_mut().find(|x| x.0 == le) {
                Some(x) => x.1 += c,
                None => sum.push((le, c)),
            }
        }
    }
    sum.sort_by(|x, y| x.0.total_cmp(&y.0));
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# TYPE knit_agent_request_duration_seconds histogram
knit_agent_request_duration_seconds_sum{method=\"NetworkDriver.Join\"} 0.5
knit_agent_request_duration_seconds_bucket{le=\"0.001\",method=\"NetworkDriver.Join\"} 2
knit_agent_request_duration_seconds_bucket{le=\"0.002\",method=\"NetworkDriver.Join\"} 8
knit_agent_request_duration_seconds_bucket{le=\"+Inf\",method=\"NetworkDriver.Join\"} 10
knit_agent_request_duration_seconds_bucket{method=\"IpamDriver.RequestAddress\",le=\"0.001\"} 10
knit_agent_request_duration_seconds_bucket{method=\"IpamDriver.RequestAddress\",le=\"0.002\"} 10
knit_agent_request_duration_seconds_bucket{method=\"IpamDriver.RequestAddress\",le=\"+Inf\"} 10
";

    #[test]
    fn histogram_page_parses_in_either_label_order() {
        let h = parse_hist(PAGE);
        assert_eq!(h.len(), 2);
        let join = &h["NetworkDriver.Join"];
        assert_eq!(join[0], (0.001, 2.0));
        assert_eq!(join[1], (0.002, 8.0));
        assert!(join[2].0.is_infinite() && join[2].1 == 10.0);
        assert_eq!(h["IpamDriver.RequestAddress"][0], (0.001, 10.0));
    }

    #[test]
    fn diff_keeps_only_methods_called_in_between() {
        let before = parse_hist(PAGE);
        let after = parse_hist(&PAGE.replace("} 10\n", "} 12\n").replace("} 8\n", "} 9\n"));
        let d = diff(&after, &before);
        // Every count of 10 became 12: RequestAddress got 2 calls, all under 1 ms.
        assert_eq!(d["IpamDriver.RequestAddress"][0], (0.001, 2.0));
        let join = &d["NetworkDriver.Join"];
        assert_eq!(join[0].1, 0.0);
        assert_eq!(join[1].1, 1.0);
        assert_eq!(join[2].1, 2.0);
        assert!(diff(&before, &before).is_empty());
    }

    #[test]
    fn quantile_interpolates_inside_its_bucket() {
        let b = [(0.001, 2.0), (0.002, 8.0), (f64::INFINITY, 10.0)];
        // rank 5 of 10: 3 of the 6 samples of (1 ms, 2 ms] -> 1.5 ms.
        let (q, le) = quantile(&b, 0.5).unwrap();
        assert!((q - 0.0015).abs() < 1e-12 && le == 0.002);
        // rank 9.9 lands in +Inf: the last finite bound is all we know.
        let (q, le) = quantile(&b, 0.99).unwrap();
        assert!(q == 0.002 && le.is_infinite());
        assert!(quantile(&[(0.001, 0.0)], 0.5).is_none());
        assert!(quantile(&[], 0.5).is_none());
    }

    #[test]
    fn total_adds_methods_bucket_by_bucket() {
        let t = total(&parse_hist(PAGE));
        assert_eq!(t[0], (0.001, 12.0));
        assert_eq!(t[1], (0.002, 18.0));
        assert_eq!(t[2].1, 20.0);
    }
}
