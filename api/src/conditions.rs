//! Condition types and reasons, in one place so status writers and readers agree.
//!
//! The condition set follows kstatus (Ready / Reconciling / Stalled with observedGeneration) so Flux
//! health checks work unchanged, plus Progressing / Degraded / Paused for humans and Argo CD.

pub mod types {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
    pub const PAUSED: &str = "Paused";
    pub const ALL: [&str; 6] = [READY, RECONCILING, STALLED, PROGRESSING, DEGRADED, PAUSED];
    /// Whether the rollout's route (HTTPRoute or VirtualService) could be written: set by the
    /// controller's router, not by the phase. False names the route that is missing.
    pub const ROUTE_READY: &str = "RouteReady";
    /// After a promotion, while the previous version is retained and `afterPromotion` has gates:
    /// whether the promoted version still passes them. Absent otherwise.
    pub const AFTER_PROMOTION_HEALTHY: &str = "AfterPromotionHealthy";
}

pub mod reasons {
    pub const STABLE: &str = "Stable";
    pub const ROLLOUT_STARTED: &str = "RolloutStarted";
    pub const STAGE_ADVANCED: &str = "StageAdvanced";
    pub const WAITING_FOR_CANDIDATE: &str = "WaitingForCandidate";
    pub const CANDIDATE_READY: &str = "CandidateReady";
    pub const ANALYSING: &str = "Analysing";
    pub const PAUSED_BY_SPEC: &str = "PausedBySpec";
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    pub const INCONCLUSIVE_ANALYSIS: &str = "InconclusiveAnalysis";
    pub const RESUMED: &str = "Resumed";
    pub const PROMOTED: &str = "Promoted";
    pub const MANUALLY_PROMOTED: &str = "ManuallyPromoted";
    pub const GATES_FAILED: &str = "GatesFailed";
    pub const ABORTED: &str = "Aborted";
    pub const REVERTED: &str = "RevertedToStable";
    pub const RETRIED: &str = "Retried";
    pub const SUPERSEDED: &str = "Superseded";
    pub const CONTRACT_MISMATCH: &str = "ContractMismatch";
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    /// A candidate pod cannot start (image, configuration) or crashed; the message names it.
    pub const CANDIDATE_FAILED: &str = "CandidateFailed";
    pub const ACCEPTANCE_RUNNING: &str = "AcceptanceRunning";
    pub const ACCEPTANCE_PASSED: &str = "AcceptancePassed";
    pub const ACCEPTANCE_FAILED: &str = "AcceptanceFailed";
    pub const AWAITING_PRE_ROLLOUT_WEBHOOK: &str = "AwaitingPreRolloutWebhook";
    pub const PRE_ROLLOUT_WEBHOOK_PASSED: &str = "PreRolloutWebhookPassed";
    pub const PRE_ROLLOUT_WEBHOOK_FAILED: &str = "PreRolloutWebhookFailed";
    pub const AWAITING_CONFIRMATION: &str = "AwaitingConfirmation";
    /// A rollback webhook answered 2xx.
    pub const ROLLBACK_WEBHOOK: &str = "RollbackRequestedByWebhook";
    /// A postRollout webhook failed (an Event; the rollout's outcome stands).
    pub const WEBHOOK_FAILED: &str = "WebhookFailed";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The route the spec names does not exist (the RouteReady condition and an Event name it).
    pub const ROUTE_NOT_FOUND: &str = "RouteNotFound";
    /// The route exists again and carries the split.
    pub const ROUTE_FOUND: &str = "RouteFound";
    /// An experiment stage's reward showed the candidate better: on to the next stage.
    pub const EXPERIMENT_WON: &str = "ExperimentWon";
    /// An experiment stage's reward showed stable better: the candidate is rolled back.
    pub const EXPERIMENT_LOST: &str = "ExperimentLost";
    /// An experiment stage reached its maxDuration with no winner: stable stays.
    pub const NO_WINNER: &str = "ExperimentWithoutWinner";
    /// A stage passed its gates and waits for its alert-free window (`alertFree.for`).
    pub const AWAITING_ALERT_FREE: &str = "AwaitingAlertFreeWindow";
    /// A stage's alert-free clock restarted: a matching alert fired, or Prometheus could not say.
    pub const ALERT_CLOCK_RESET: &str = "AlertFreeClockRestarted";
    /// An undo sent all traffic back to the retained previous version.
    pub const UNDONE: &str = "Undone";
    /// An undo waits for the retained (cold) version's pods.
    pub const UNDOING: &str = "Undoing";
    /// An undo could not run (nothing retained, or a rollout is underway).
    pub const UNDO_REFUSED: &str = "UndoRefused";
    /// The promoted version failed its after-promotion gates.
    pub const AFTER_PROMOTION_FAILED: &str = "AfterPromotionGatesFailed";
    /// The promoted version passes its after-promotion gates (again).
    pub const AFTER_PROMOTION_PASSING: &str = "AfterPromotionGatesPassing";
    /// A version's retention ended: it is deprecated.
    pub const DEPRECATED: &str = "VersionDeprecated";
    /// A deprecated version's Deployment was deleted.
    pub const REMOVED: &str = "VersionRemoved";
}
