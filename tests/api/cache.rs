//! The cache against a real redis-server: what it holds, how it fails, and
//! that it never answers from records older than the mirror's.

use std::collections::HashSet;
use std::time::Duration;

use vnid::cache::{BreakerState, CachedMirror, MetricsSnapshot};
use vnid::domain::CitizenStatus;
use vnid::mirror::{LoadMode, load_records};
use vnid::pb;

use crate::helpers::*;
use crate::pg::PgServer;
use crate::redis_server::RedisServer;

async fn spawn_with_redis(redis: &RedisServer) -> TestApp {
    spawn_with_redis_timeout(redis, 100).await
}

async fn spawn_with_redis_timeout(redis: &RedisServer, timeout_ms: u64) -> TestApp {
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.cache.timeout_ms = timeout_ms;
    settings.redis_url = Some(vnid::config::Secret::new(redis.url()));
    settings.cache.breaker_cooldown_ms = 200;
    settings.cache.breaker_failures = 2;
    spawn_app_with(settings).await
}

fn cache(app: &TestApp) -> &CachedMirror {
    app.cache.as_deref().expect("the cache is on")
}

fn metrics(app: &TestApp) -> MetricsSnapshot {
    cache(app).metrics()
}

/// The cache writes after answering; wait until the value is there.
async fn settle(app: &TestApp) {
    for _ in 0..200 {
        if metrics(app).mirror_queries > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The cached lookups (not the marks of used request ids, `vnid:r:v1:…`).
async fn all_keys(redis: &RedisServer) -> Vec<String> {
    keys_like(redis, "vnid:v1:*").await
}

async fn keys_like(redis: &RedisServer, pattern: &str) -> Vec<String> {
    let mut conn = redis.client().await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    keys
}

#[tokio::test]
async fn hits_misses_and_negative_answers() {
    let redis = RedisServer::start();
    let app = spawn_with_redis(&redis).await;
    let first = app.verify(request(DAM.id, DAM.name)).await.unwrap();
    settle(&app).await;
    let m = metrics(&app);
    assert_eq!((m.misses, m.mirror_queries, m.hits), (1, 1, 0));
    let second = app.verify(request(DAM.id, DAM.name)).await.unwrap();
    assert_eq!(second.verdict(), first.verdict());
    assert_eq!(metrics(&app).hits, 1);
    assert_eq!(
        metrics(&app).mirror_queries,
        1,
        "a hit must not ask the mirror"
    );

    // Not found is cached too.
    for _ in 0..2 {
        let r = app.verify(request(UNKNOWN_ID, DAM.name)).await.unwrap();
        assert_eq!(r.reason(), pb::Reason::NotFound);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = metrics(&app);
    assert_eq!((m.negative_hits, m.mirror_queries), (1, 2));
    assert_eq!(all_keys(&redis).await.len(), 2);
}

#[tokio::test]
async fn redis_holds_nothing_readable() {
    let redis = RedisServer::start();
    let app = spawn_with_redis(&redis).await;
    for p in [&DAM, &THUY, &HOA_DECEASED, &LAN_CANCELLED] {
        let mut req = request(p.id, p.name);
        req.claims.as_mut().unwrap().date_of_birth = date(1990, 5, 17);
        app.verify(req).await.unwrap();
    }
    app.verify(request(UNKNOWN_ID, DAM.name)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let keys = all_keys(&redis).await;
    assert_eq!(keys.len(), 5);
    let marks = keys_like(&redis, "vnid:r:v1:*").await;
    assert_eq!(marks.len(), 5, "one mark per used request id");
    assert_eq!(
        keys_like(&redis, "*").await.len(),
        10,
        "nothing else is in Redis"
    );
    let mut conn = redis.client().await;
    let mut secrets: Vec<String> = vec![UNKNOWN_ID.into()];
    for p in [&DAM, &THUY, &HOA_DECEASED, &LAN_CANCELLED] {
        secrets.push(p.id.into());
        secrets.push(p.dob.into());
        secrets.extend(p.old.iter().map(|o| o.to_string()));
        secrets.push(p.name.into());
        secrets.push(vnid::domain::normalize_name(p.name));
        for word in p.name.split(' ') {
            secrets.push(word.into());
            secrets.push(word.to_lowercase());
            secrets.push(vnid::domain::normalize_name(word));
        }
        secrets.push(p.status.as_str().into());
    }
    // Three bytes (`Lan`, any case) turn up in random ciphertext by chance
    // about once in a thousand runs: words that short are looked for as
    // part of the whole name.
    secrets.retain(|secret| secret.len() >= 4);
    for key in keys.into_iter().chain(marks) {
        // vnid:v1:<generation>:<22 characters of base64url>, or
        // vnid:r:v1:<22 characters of base64url> (a used request id).
        let parts: Vec<&str> = key.split(':').collect();
        assert_eq!(parts.len(), 4, "{key}");
        if parts[1] == "r" {
            assert_eq!((parts[0], parts[2]), ("vnid", "v1"), "{key}");
        } else {
            assert_eq!((parts[0], parts[1]), ("vnid", "v1"), "{key}");
            assert!(parts[2].bytes().all(|b| b.is_ascii_digit()), "{key}");
        }
        assert!(
            parts[3].len() == 22
                && parts[3]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{key}"
        );
        let value: Vec<u8> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&value).to_lowercase();
        for secret in &secrets {
            assert!(!key.contains(secret.as_str()), "{secret} in key {key}");
            assert!(
                !text.contains(&secret.to_lowercase()),
                "{secret} readable in a value"
            );
        }
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "every key expires");
    }
}

#[tokio::test]
async fn swapped_values_fail_closed() {
    let redis = RedisServer::start();
    let app = spawn_with_redis(&redis).await;
    app.verify(request(DAM.id, DAM.name)).await.unwrap();
    app.verify(request(HOA_DECEASED.id, HOA_DECEASED.name))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let keys = all_keys(&redis).await;
    assert_eq!(keys.len(), 2);
    let mut conn = redis.client().await;
    let a: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    let b: Vec<u8> = redis::cmd("GET")
        .arg(&keys[1])
        .query_async(&mut conn)
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg(&keys[0])
        .arg(&b)
        .query_async(&mut conn)
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg(&keys[1])
        .arg(&a)
        .query_async(&mut conn)
        .await
        .unwrap();

    let before = metrics(&app);
    // Each answer is still its own person's: the swapped values are refused.
    let r = app.verify(request(DAM.id, DAM.name)).await.unwrap();
    assert_eq!(r.verdict(), pb::Verdict::Verified);
    let r = app
        .verify(request(HOA_DECEASED.id, HOA_DECEASED.name))
        .await
        .unwrap();
    assert_eq!(r.reason(), pb::Reason::Deceased);
    let after = metrics(&app);
    assert_eq!(after.corrupt - before.corrupt, 2);
    assert_eq!(after.hits - before.hits, 0);
    assert_eq!(after.mirror_queries - before.mirror_queries, 2);
}

#[tokio::test]
async fn a_thousand_concurrent_misses_make_one_mirror_query() {
    let redis = RedisServer::start();
    // A deadline for a debug build with a thousand calls on two cores: this
    // test is about coalescing, not about a slow cache.
    let app = spawn_with_redis_timeout(&redis, 5_000).await;
    let before = metrics(&app);
    let calls = (0..1_000).map(|_| {
        let client = app.client.clone();
        let req = request(THUY.id, THUY.name);
        tokio::spawn(async move { client.clone().verify(req).await })
    });
    let results = futures_join_all(calls).await;
    assert!(results.iter().all(|r| r.as_ref().is_ok_and(|r| {
        r.as_ref()
            .is_ok_and(|r| r.get_ref().verdict() == pb::Verdict::Verified)
    })));
    let after = metrics(&app);
    assert_eq!(after.errors, 0, "{after:?}");
    assert_eq!(after.mirror_queries - before.mirror_queries, 1, "{after:?}");
}

async fn futures_join_all<T>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push(handle.await);
    }
    out
}

#[tokio::test]
async fn redis_killed_mid_run_fails_no_verification_and_the_cache_recovers() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let app = spawn_with_redis(&redis).await;
    let people = [&DAM, &THUY, &LAN_CANCELLED];
    let run = |rounds: usize| {
        let app = &app;
        async move {
            let mut failures = 0;
            for i in 0..rounds {
                let p = people[i % people.len()];
                if app.verify(request(p.id, p.name)).await.is_err() {
                    failures += 1;
                }
            }
            failures
        }
    };
    assert_eq!(run(150).await, 0);
    assert!(metrics(&app).hits > 100);

    redis.kill();
    assert_eq!(
        run(300).await,
        0,
        "a verification failed because Redis was down"
    );
    assert_eq!(cache(&app).breaker_state(), BreakerState::Open);
    let during = metrics(&app);
    assert!(during.bypassed > 0 && during.errors > 0, "{during:?}");

    let _redis = RedisServer::start_on(port);
    // The breaker probes after its cool-down and the cache fills again.
    let mut recovered = false;
    for _ in 0..100 {
        assert_eq!(run(30).await, 0);
        if cache(&app).breaker_state() == BreakerState::Closed
            && metrics(&app).hits > during.hits + 20
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        recovered,
        "the hit ratio did not recover: {:?}",
        metrics(&app)
    );
}

#[tokio::test]
async fn no_stale_answer_once_an_update_is_known() {
    let redis = RedisServer::start();
    let app = spawn_with_redis(&redis).await;
    // Cached as active.
    for _ in 0..3 {
        assert_eq!(
            app.verify(request(DAM.id, DAM.name))
                .await
                .unwrap()
                .verdict(),
            pb::Verdict::Verified
        );
    }
    assert!(metrics(&app).hits >= 1);

    let mut died = record(&DAM);
    died.status = CitizenStatus::Deceased;
    died.updated_at = DATA_AS_OF + 10;
    load_records(&app.mirror, LoadMode::Delta, None, [died].into_iter())
        .await
        .unwrap();
    let generation: i64 = sqlx::query_scalar("SELECT generation FROM mirror_state")
        .fetch_one(app.mirror.pool())
        .await
        .unwrap();

    // Once the instance has learned the new generation (it polls every
    // 50 ms here, 500 ms by default), every answer is the new one.
    for _ in 0..400 {
        if cache(&app).generation() >= generation {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cache(&app).generation() >= generation);
    let mut answers = HashSet::new();
    for _ in 0..20 {
        answers.insert(
            app.verify(request(DAM.id, DAM.name))
                .await
                .unwrap()
                .reason(),
        );
    }
    assert_eq!(answers, HashSet::from([pb::Reason::Deceased]));
}

#[tokio::test]
async fn a_stalled_redis_fails_no_verification() {
    let redis = RedisServer::start();
    let app = spawn_with_redis_timeout(&redis, 50).await;
    for p in [&DAM, &THUY] {
        app.verify(request(p.id, p.name)).await.unwrap();
    }
    // Redis stops answering for two seconds (it sleeps in a command).
    let mut conn = redis.client().await;
    let stall = tokio::spawn(async move {
        let _: redis::RedisResult<()> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(2)
            .query_async(&mut conn)
            .await;
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = metrics(&app);
    for i in 0..60 {
        let p = [&DAM, &THUY, &LAN_CANCELLED][i % 3];
        let r = app.verify(request(p.id, p.name)).await;
        assert!(
            r.is_ok(),
            "a verification failed while Redis was stalled: {r:?}"
        );
    }
    let during = metrics(&app);
    assert!(
        during.errors > before.errors,
        "the stall was never noticed: {during:?}"
    );
    assert!(
        during.bypassed > before.bypassed,
        "the breaker never opened: {during:?}"
    );
    stall.await.unwrap();
}

#[tokio::test]
async fn batch_items_neither_read_nor_fill_the_cache() {
    let redis = RedisServer::start();
    let app = spawn_with_redis(&redis).await;
    // A desk's hot entry.
    app.verify(request(DAM.id, DAM.name)).await.unwrap();
    settle(&app).await;
    let hot = all_keys(&redis).await;
    assert_eq!(hot.len(), 1);
    let before = metrics(&app);

    // An exam board's list: each candidate once, the desk's patient too.
    let items = [
        (DAM.id, DAM.name),
        (THUY.id, THUY.name),
        (UNKNOWN_ID, DAM.name),
    ];
    let input: Vec<_> = (items.iter().enumerate())
        .map(|(n, (id, name))| {
            let mut r = request(id, name);
            r.request_id = format!("list-{n}");
            r
        })
        .collect();
    let mut answers = app
        .client
        .clone()
        .verify_batch(tokio_stream::iter(input))
        .await
        .unwrap()
        .into_inner();
    let mut verdicts = Vec::new();
    while let Some(item) = tokio_stream::StreamExt::next(&mut answers).await {
        match item.unwrap().result.unwrap() {
            pb::verify_batch_response::Result::Response(r) => {
                verdicts.push((r.verdict(), r.reason()))
            }
            other => panic!("unexpected item {other:?}"),
        }
    }
    verdicts.sort_by_key(|v| (v.0 as i32, v.1 as i32));
    assert_eq!(
        verdicts,
        [
            (pb::Verdict::Verified, pb::Reason::Unspecified),
            (pb::Verdict::Verified, pb::Reason::Unspecified),
            (pb::Verdict::NotVerified, pb::Reason::NotFound),
        ]
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = metrics(&app);
    assert_eq!(after.single_use - before.single_use, 3);
    assert_eq!(
        (after.hits, after.negative_hits, after.misses),
        (before.hits, before.negative_hits, before.misses),
        "batch items do not read the cache"
    );
    assert_eq!(after.mirror_queries - before.mirror_queries, 3);
    assert_eq!(all_keys(&redis).await, hot, "nor fill it");
    // The desk's entry still serves the desk.
    app.verify(request(DAM.id, DAM.name)).await.unwrap();
    assert_eq!(metrics(&app).hits, before.hits + 1);
}
