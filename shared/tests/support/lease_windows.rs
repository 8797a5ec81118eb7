//! The lease bound's check over a run's admissions, shared by the two simulations
//! (`shared/tests/lease.rs`, the arithmetic; `edge-validator/tests/lease_bound.rs`, the edge's
//! own code): every window that starts and ends at an admitted request is held to
//! `burst + (w + ttl) / T + O` (`shared::lease`).

/// How close a run came to the bound.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Worst {
    /// The most admitted in one window beyond the plan alone (`burst + w / T`), and the
    /// bound's allowance beyond the plan in that window (`ttl / T + O`).
    pub(crate) over_plan: (u64, u64),
    /// The least room under the bound (negative: broken).
    pub(crate) margin: i64,
}

/// The run's worst windows. `admitted`: the admission times in ms, in order; the plan is
/// `limit` a second with `burst`; `credits_after(start)`: the credits counted in `O` for
/// windows starting at `start` (permits of leases granted at or before `start - ttl`, credited
/// back after that moment), as (when, permits) in time order.
pub(crate) fn worst(
    admitted: &[u64],
    limit: u64,
    burst: u64,
    ttl_ms: u64,
    credits_after: impl Fn(u64) -> Vec<(u64, u64)>,
) -> Worst {
    let mut worst = Worst {
        margin: i64::MAX,
        ..Worst::default()
    };
    for (i, &start) in admitted.iter().enumerate() {
        let credits = credits_after(start);
        let (mut counted, mut credited) = (0, 0);
        for (j, &end) in admitted.iter().enumerate().skip(i) {
            let count = (j - i + 1) as u64;
            while let Some(&(when, permits)) = credits.get(counted) {
                if when > end {
                    break;
                }
                credited += permits;
                counted += 1;
            }
            // GCRA admits `burst + floor(L / T)` in a span of L ms; T = 1000 / limit ms.
            let plan_alone = burst + (end - start) * limit / 1000;
            let allowance =
                (end - start + ttl_ms) * limit / 1000 - (end - start) * limit / 1000 + credited;
            worst.margin = worst
                .margin
                .min((plan_alone + allowance) as i64 - count as i64);
            let over = count.saturating_sub(plan_alone);
            if over > worst.over_plan.0 {
                worst.over_plan = (over, allowance);
            }
        }
    }
    worst
}

/// The credits of `O` for windows starting at `start`, from each lease's grant time and its
/// credit (when, permits), if any.
pub(crate) fn credits_after(
    leases: impl Iterator<Item = (u64, Option<(u64, u64)>)>,
    start: u64,
    ttl_ms: u64,
) -> Vec<(u64, u64)> {
    let Some(since) = start.checked_sub(ttl_ms) else {
        return Vec::new();
    };
    let mut credits: Vec<(u64, u64)> = leases
        .filter(|&(granted_at, _)| granted_at <= since)
        .filter_map(|(_, credited)| credited)
        .filter(|&(when, _)| since < when)
        .collect();
    credits.sort_unstable();
    credits
}
