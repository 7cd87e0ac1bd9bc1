//! Routing micro-benchmarks: SubscriptionIndex matching (select_into, and select_into plus
//! deliver_matches as the broker's publish does) against 1K, 100K and 1M subscriptions,
//! subscribe/unsubscribe cost, and RetainedMessages lookups over 10K and 1M retained topics.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vane_core::{
    Message, Picker, RetainedMessages, RetainedStore, RouteScratch, SharePolicy, Subscription,
    SubscriptionIndex,
};
use vane_proto::{PublishProperties, QoS, SubscriptionOptions, TopicFilter};

/// The subscriber handle: the broker's is an `Arc` of its session slot, so cloning a match
/// costs an atomic increment here as it does there.
type Subscriber = Arc<u64>;

/// Topic layout: sites of [`LINES_PER_SITE`] lines of [`DEVICES_PER_LINE`] devices, each
/// publishing the metrics in [`METRICS`] on `site/<s>/line/<l>/dev-<d>/<metric>`.
const LINES_PER_SITE: usize = 20;
const DEVICES_PER_LINE: usize = 50;
const METRICS: [&str; 4] = ["temp", "humidity", "pressure", "cmd"];
/// Subscriptions `+/+/#` (monitoring taps), present whatever the index size.
const GLOBAL_TAPS: usize = 4;
/// Publish topics the matching benchmarks rotate through, spread over the whole index.
const ROTATION: usize = 1024;

fn filter(s: &str) -> TopicFilter {
    TopicFilter::parse(s.to_string()).expect("valid filter")
}

fn site_line(line: usize) -> (usize, usize) {
    (line / LINES_PER_SITE, line % LINES_PER_SITE)
}

fn device_topic(line: usize, device: usize, metric: &str) -> String {
    let (s, l) = site_line(line);
    format!("site/{s}/line/{l}/dev-{device}/{metric}")
}

/// The filters of an index of `n` subscriptions, with a realistic mix: per line, one exact
/// subscription for every device and metric (the devices' own and their backend's), two
/// `site/<s>/line/<l>/+/temp` (line dashboards); per site two `site/<s>/#` (site gateways);
/// and [`GLOBAL_TAPS`] `+/+/#`. About 99% of subscriptions are exact and a `temp` publish
/// matches 9 of them (1 exact, 2 line, 2 site, 4 taps) whatever `n`.
///
/// Returns the filters and the number of lines populated.
fn subscription_filters(n: usize) -> (Vec<String>, usize) {
    let mut filters: Vec<String> = (0..GLOBAL_TAPS).map(|_| "+/+/#".to_string()).collect();
    let mut line = 0;
    while filters.len() < n {
        let (s, l) = site_line(line);
        if l == 0 {
            filters.extend((0..2).map(|_| format!("site/{s}/#")));
        }
        filters.extend((0..2).map(|_| format!("site/{s}/line/{l}/+/temp")));
        for d in 0..DEVICES_PER_LINE {
            for m in METRICS {
                filters.push(device_topic(line, d, m));
            }
        }
        line += 1;
    }
    filters.truncate(n);
    (filters, line)
}

fn subscription(session_id: u64) -> Subscription<Subscriber> {
    Subscription {
        subscriber: Arc::new(session_id),
        session_id,
        options: SubscriptionOptions::qos(QoS::AtLeastOnce),
        subscription_id: None,
    }
}

struct Fixture {
    index: SubscriptionIndex<Subscriber>,
    /// Fully populated lines (the last one may be cut short by truncation).
    lines: usize,
    /// A session id no subscription in the index uses.
    next_session: u64,
}

fn build_index(n: usize) -> Fixture {
    let (filters, lines) = subscription_filters(n);
    let mut index = SubscriptionIndex::new();
    for (i, f) in filters.iter().enumerate() {
        index.subscribe(&filter(f), subscription(i as u64 + 1));
    }
    assert_eq!(index.len(), n);
    Fixture {
        index,
        lines: lines.saturating_sub(1).max(1),
        next_session: n as u64 + 1,
    }
}

/// A deterministic spread of `count` values below `bound` (xorshift), so that consecutive
/// publishes touch unrelated parts of the trie as real traffic does.
fn spread(count: usize, bound: usize, seed: u64) -> Vec<usize> {
    let mut x = seed | 1;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % bound as u64) as usize
        })
        .collect()
}

fn rotation_topics(lines: usize) -> Vec<String> {
    spread(ROTATION, lines * DEVICES_PER_LINE, 0x5EED)
        .into_iter()
        .map(|i| device_topic(i / DEVICES_PER_LINE, i % DEVICES_PER_LINE, "temp"))
        .collect()
}

fn size_name(n: usize) -> String {
    match n {
        n if n >= 1_000_000 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 => format!("{}K", n / 1_000),
        n => n.to_string(),
    }
}

fn message(topic: &str) -> Arc<Message> {
    Arc::new(Message {
        topic: topic.to_string().into(),
        payload: Bytes::from_static(&[0x5A; 64]),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: PublishProperties::default(),
        origin: 0,
        received: Instant::now(),
    })
}

fn available(_: &Subscriber) -> bool {
    true
}

/// Matching, routing and subscription churn against indexes of 1K, 100K and 1M
/// subscriptions; each index is built once, outside the timed loops.
fn subscriptions(c: &mut Criterion) {
    for n in [1_000, 100_000, 1_000_000] {
        let started = Instant::now();
        let mut fx = build_index(n);
        eprintln!(
            "built an index of {} subscriptions in {:.2?}",
            size_name(n),
            started.elapsed()
        );
        let topics = rotation_topics(fx.lines);
        let messages: Vec<Arc<Message>> = topics.iter().map(|t| message(t)).collect();
        let id = BenchmarkId::from_parameter(size_name(n));

        // Every rotation topic matches the same number of subscriptions.
        let mut scratch: RouteScratch<Subscriber> = RouteScratch::default();
        fx.index.matches_into(&topics[0], &mut scratch.matches);
        let matched = scratch.matches.len();
        assert_eq!(matched, 9, "a temp publish matches 9 subscriptions");
        scratch.matches.clear();

        let mut group = c.benchmark_group("select_into");
        group.throughput(Throughput::Elements(1));
        group.bench_function(id.clone(), |b| {
            let mut i = 0;
            b.iter(|| {
                let topic = &topics[i % ROTATION];
                i += 1;
                let picker = Picker {
                    policy: SharePolicy::RoundRobin,
                    origin: 7,
                    random: scratch.next_random(),
                    available: &available,
                    permitted: None,
                    exclude: None,
                };
                fx.index
                    .select_into(topic, &picker, &mut scratch.matches, &mut scratch.shared);
                let found = scratch.matches.len() + scratch.shared.len();
                scratch.matches.clear();
                scratch.shared.clear();
                found
            });
        });
        group.finish();

        let mut group = c.benchmark_group("route_publish");
        group.throughput(Throughput::Elements(1));
        group.bench_function(id.clone(), |b| {
            let mut i = 0;
            b.iter(|| {
                let message = &messages[i % ROTATION];
                i += 1;
                let picker = Picker {
                    policy: SharePolicy::RoundRobin,
                    origin: 7,
                    random: scratch.next_random(),
                    available: &available,
                    permitted: None,
                    exclude: None,
                };
                fx.index.select_into(
                    &message.topic,
                    &picker,
                    &mut scratch.matches,
                    &mut scratch.shared,
                );
                scratch.deliver_matches(message, |subscriber, delivery| {
                    black_box((subscriber, delivery));
                })
            });
        });
        group.finish();

        // Pairs, so that the index keeps its size however many iterations criterion runs.
        let mut group = c.benchmark_group("subscribe_unsubscribe");
        group.throughput(Throughput::Elements(1));
        // A device's own topic, new to the index: creates (and then prunes) a trie leaf.
        let new_filters: Vec<TopicFilter> = spread(ROTATION, fx.lines, 0xD1CE)
            .into_iter()
            .map(|line| filter(&device_topic(line, DEVICES_PER_LINE + 1, "config")))
            .collect();
        // One more subscriber on a line dashboard filter that already has two.
        let shared_filters: Vec<TopicFilter> = spread(ROTATION, fx.lines, 0xFACE)
            .into_iter()
            .map(|line| {
                let (s, l) = site_line(line);
                filter(&format!("site/{s}/line/{l}/+/temp"))
            })
            .collect();
        for (kind, filters) in [
            ("new_filter", &new_filters),
            ("existing_filter", &shared_filters),
        ] {
            group.bench_function(BenchmarkId::new(kind, size_name(n)), |b| {
                let sub = subscription(fx.next_session);
                let mut i = 0;
                b.iter(|| {
                    let f = &filters[i % ROTATION];
                    i += 1;
                    let replaced = fx.index.subscribe(f, sub.clone());
                    let removed = fx.index.unsubscribe(f, sub.session_id);
                    (replaced, removed)
                });
            });
        }
        group.finish();
        assert_eq!(fx.index.len(), n);
    }
}

fn build_retained(n: usize) -> RetainedMessages {
    let payload = Bytes::from_static(&[0x5A; 64]);
    let mut store = RetainedMessages::new();
    let mut line = 0;
    while store.len() < n {
        'line: for d in 0..DEVICES_PER_LINE {
            for m in METRICS {
                if store.len() == n {
                    break 'line;
                }
                store.set(Arc::new(Message {
                    topic: device_topic(line, d, m).into(),
                    payload: payload.clone(),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    properties: PublishProperties::default(),
                    origin: 0,
                    received: Instant::now(),
                }));
            }
        }
        line += 1;
    }
    store
}

/// RetainedMessages::matches_into, as run for a new subscription, over 10K and 1M retained
/// topics: an exact topic, a `+` filter (one line's devices), a site's `#` and the whole `#`.
/// Throughput counts the retained messages returned.
fn retained(c: &mut Criterion) {
    for n in [10_000, 1_000_000] {
        let started = Instant::now();
        let store = build_retained(n);
        eprintln!(
            "built a store of {} retained messages in {:.2?}",
            size_name(n),
            started.elapsed()
        );
        let mut group = c.benchmark_group("retained_matches");
        let filters = [
            ("exact", filter(&device_topic(7, 12, "temp"))),
            ("plus", filter("site/0/line/7/+/temp")),
            ("site_hash", filter("site/0/#")),
            ("hash", filter("#")),
        ];
        for (kind, f) in filters {
            let mut out = Vec::new();
            store.matches_into(&f, &mut out);
            group.throughput(Throughput::Elements(out.len() as u64));
            if out.len() > 100_000 {
                // Tens of milliseconds per run: ten samples is plenty.
                group
                    .sample_size(10)
                    .measurement_time(Duration::from_secs(5));
            }
            group.bench_function(BenchmarkId::new(kind, size_name(n)), |b| {
                b.iter(|| {
                    out.clear();
                    store.matches_into(&f, &mut out);
                    out.len()
                });
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    // Modest settings so that `cargo bench -p vane-core` stays within a few minutes,
    // including building the 1M-entry structures.
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = subscriptions, retained
}
criterion_main!(benches);
