//! The decision core: gating webhooks.

use super::*;
use crate::acceptance_holds::*;

fn with_hooks(hooks: Vec<GatingWebhook>) -> (ModelRolloutSpec, ModelRolloutStatus) {
    let mut v1 = spec("v1", SHA_V1);
    v1.webhooks = hooks.clone();
    let first = decide(&v1, &ModelRolloutStatus::default(), &obs(false), at(-100));
    let mut s = spec("v2", SHA_V2);
    s.webhooks = hooks;
    let d = decide(&s, &first.status, &obs(false), at(-10));
    (s, d.status)
}

#[test]
fn pre_rollout_webhooks_are_asked_once_ready_and_traffic_waits_for_every_2xx() {
    let (s, st) = with_hooks(vec![hook("smoke", WebhookKind::PreRollout), hook("tests", WebhookKind::PreRollout)]);
    let due = |st: &ModelRolloutStatus, ready| webhooks_due(&s, st, ready, false, t0());
    assert!(due(&st, false).is_empty(), "not before the candidate is Ready");
    assert_eq!(due(&st, true), vec![WebhookKind::PreRollout]);
    // One answered 2xx, the other has not answered yet: still no traffic, asked again soon.
    let o = Observations { webhooks: vec![answered("smoke", WebhookKind::PreRollout, 200)], ..obs(true) };
    let d = step(&s, &st, o, t0());
    assert_eq!(traffic(&d).2 + traffic(&d).3, 0);
    assert_eq!(d.status.reason.as_deref(), Some(reasons::AWAITING_PRE_ROLLOUT_WEBHOOK));
    assert!(d.requeue_after.unwrap() <= std::time::Duration::from_secs(2));
    assert_eq!(due(&d.status, true), vec![WebhookKind::PreRollout], "asked until every hook said 2xx");
    let o = Observations {
        webhooks: vec![
            answered("smoke", WebhookKind::PreRollout, 200),
            answered("tests", WebhookKind::PreRollout, 204),
        ],
        ..obs(true)
    };
    let d = step(&s, &d.status, o, at(5));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::PRE_ROLLOUT_WEBHOOK_PASSED));
    assert_eq!(traffic(&d), ("v1".into(), Some("v2".into()), 0, 100), "the shadow stage starts");
    assert_eq!(d.status.stage_start_time.as_ref().unwrap().0, at(5));
    assert!(due(&d.status, true).is_empty(), "not asked again");
    assert_eq!(d.status.webhooks.len(), 2);
    assert!(d.status.webhooks.iter().all(|w| w.ok && w.version == "v2"));
}

#[test]
fn a_pre_rollout_webhook_that_does_not_answer_2xx_fails_the_rollout_and_a_retry_asks_again() {
    let (mut s, st) = with_hooks(vec![hook("smoke", WebhookKind::PreRollout)]);
    let o = Observations { webhooks: vec![answered("smoke", WebhookKind::PreRollout, 412)], ..obs(true) };
    let d = step(&s, &st, o, t0());
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::PRE_ROLLOUT_WEBHOOK_FAILED));
    assert!(d.status.message.as_deref().unwrap().contains("smoke: HTTP 412"), "{:?}", d.status.message);
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
    let failed = d.status.webhooks.iter().find(|w| w.name == "smoke").unwrap();
    assert_eq!((failed.ok, failed.code), (false, Some(412)));
    s.operations.retry = Some(OperationRequest { id: "again".into(), reason: None, requested_by: None });
    let d = step(&s, &d.status, obs(true), at(30));
    assert_eq!(d.status.phase, Some(Phase::Progressing));
    assert_eq!(webhooks_due(&s, &d.status, true, false, at(30)), vec![WebhookKind::PreRollout]);
}

#[test]
fn confirm_promotion_holds_after_the_last_stage_asking_each_interval_until_2xx() {
    let (s, st) = with_hooks(vec![hook("change-window", WebhookKind::ConfirmPromotion)]);
    let st = step(&s, &st, obs(true), t0()).status;
    // shadow, 5, 25 pass; the last stage (100) passes and holds.
    let (st, now) = pass_stages(&s, st, 3, 0);
    assert_eq!(st.stage_name.as_deref(), Some("full"));
    assert!(webhooks_due(&s, &st, true, false, at(now)).is_empty(), "not before the last stage passes");
    let d = step(&s, &st, analysed(healthy()), at(now + 10));
    assert_eq!(d.status.phase, Some(Phase::Paused));
    assert_eq!(d.status.hold, Some(Hold::Confirmation));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::AWAITING_CONFIRMATION));
    assert_eq!(traffic(&d).2, 100, "the last stage's traffic stays while it waits");
    let now = now + 10;
    assert_eq!(webhooks_due(&s, &d.status, true, false, at(now)), vec![WebhookKind::ConfirmPromotion]);
    // "Not yet": held; asked again an interval (5 s) later, not before.
    let o = Observations { webhooks: vec![answered("change-window", WebhookKind::ConfirmPromotion, 423)], ..obs(true) };
    let d = step(&s, &d.status, o, at(now + 1));
    assert_eq!(d.status.hold, Some(Hold::Confirmation));
    assert!(webhooks_due(&s, &d.status, true, false, at(now + 5)).is_empty());
    assert_eq!(webhooks_due(&s, &d.status, true, false, at(now + 6)), vec![WebhookKind::ConfirmPromotion]);
    let o = Observations { webhooks: vec![answered("change-window", WebhookKind::ConfirmPromotion, 200)], ..obs(true) };
    let d = step(&s, &d.status, o, at(now + 6));
    assert_eq!(d.status.phase, Some(Phase::Promoted), "{:?}", d.status.message);
    assert_eq!(d.status.stable_version.as_deref(), Some("v2"));
}

#[test]
fn a_rollback_webhook_is_asked_at_each_analysis_and_its_2xx_rolls_back_now() {
    let (s, st) = with_hooks(vec![hook("kill-switch", WebhookKind::Rollback)]);
    let st = step(&s, &st, obs(true), t0()).status;
    assert!(webhooks_due(&s, &st, true, false, at(1)).is_empty(), "only with an analysis");
    assert_eq!(webhooks_due(&s, &st, true, true, at(5)), vec![WebhookKind::Rollback]);
    // A non-2xx is "carry on".
    let o = Observations { webhooks: vec![answered("kill-switch", WebhookKind::Rollback, 404)], ..analysed(healthy()) };
    let d = step(&s, &st, o, at(5));
    assert_eq!(d.status.phase, Some(Phase::Progressing));
    let o = Observations { webhooks: vec![answered("kill-switch", WebhookKind::Rollback, 200)], ..analysed(healthy()) };
    let d = step(&s, &d.status, o, at(10));
    assert_eq!(d.status.phase, Some(Phase::RolledBack));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::ROLLBACK_WEBHOOK));
    assert!(d.status.message.as_deref().unwrap().contains("kill-switch"), "{:?}", d.status.message);
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
}

#[test]
fn post_rollout_webhooks_hear_once_of_every_end_and_a_failure_is_an_event() {
    let (s, st) = with_hooks(vec![hook("report", WebhookKind::PostRollout)]);
    let st = step(&s, &st, obs(true), t0()).status;
    assert!(webhooks_due(&s, &st, true, false, at(1)).is_empty(), "not while it runs");
    let (st, now) = pass_stages(&s, st, 4, 0);
    assert_eq!(st.phase, Some(Phase::Promoted));
    let ended = st.post_rollout.clone().expect("pending");
    assert_eq!((ended.version.as_str(), ended.outcome), ("v2", Outcome::Promoted));
    assert_eq!(webhooks_due(&s, &st, false, false, at(now)), vec![WebhookKind::PostRollout]);
    let o = Observations { webhooks: vec![answered("report", WebhookKind::PostRollout, 500)], ..obs(false) };
    let d = step(&s, &st, o, at(now + 1));
    assert!(d.status.post_rollout.is_none(), "called once, whatever it answered");
    let w = d.status.webhooks.iter().find(|w| w.kind == WebhookKind::PostRollout).unwrap();
    assert_eq!((w.version.as_str(), w.ok, w.code), ("v2", false, Some(500)));
    assert!(
        d.actions.iter().any(|a| matches!(a, Action::Event { kind: EventType::Warning, reason, .. } if *reason == reasons::WEBHOOK_FAILED)),
        "{:?}",
        d.actions
    );
    assert!(webhooks_due(&s, &d.status, false, false, at(now + 2)).is_empty());
}

#[test]
fn acceptance_then_pre_rollout_webhooks_and_traffic_only_after_both() {
    let (mut s, st) = accepting();
    s.webhooks = vec![hook("smoke", WebhookKind::PreRollout)];
    let d = step(&s, &st, obs(true), t0());
    assert!(webhooks_due(&s, &d.status, true, false, t0()).is_empty(), "not while acceptance runs");
    let o = Observations { acceptance: Some(measured(0.97, 0.96, 0.03, 0)), ..obs(true) };
    let d = step(&s, &d.status, o, at(30));
    assert_eq!(d.status.acceptance.as_ref().unwrap().verdict, Some(Verdict::Pass));
    assert_eq!(traffic(&d).2 + traffic(&d).3, 0, "no traffic between the two");
    assert_eq!(d.status.reason.as_deref(), Some(reasons::AWAITING_PRE_ROLLOUT_WEBHOOK));
    assert_eq!(webhooks_due(&s, &d.status, true, false, at(31)), vec![WebhookKind::PreRollout]);
    let o = Observations { webhooks: vec![answered("smoke", WebhookKind::PreRollout, 200)], ..obs(true) };
    let d = step(&s, &d.status, o, at(32));
    assert_eq!(traffic(&d), ("v1".into(), Some("v2".into()), 0, 100));
    assert_eq!(d.status.stage_start_time.as_ref().unwrap().0, at(32));
}
