//! A decision's outcome: the status, the actions that carry it out (what follows from the status,
//! then the effects the steps accumulated), and when to look again.

use super::*;

/// While the candidate is not Ready, how often its pods are looked at again.
pub const UNREADY_RECHECK: SignedDuration = SignedDuration::from_secs(5);

impl Ctx<'_> {
    pub(super) fn finish(mut self) -> Decision {
        let now = self.now;
        let mut actions = Vec::new();
        let mut wake: Vec<Timestamp> = Vec::new();
        let stable = self.st.stable.clone().expect("stable is set by step");
        actions.push(Action::EnsureWorkload { role: Role::Stable, model: stable.clone() });
        let active = self.st.phase.is_some_and(Phase::is_active);
        if active && self.fx.ensure_candidate {
            actions.push(Action::EnsureWorkload { role: Role::Candidate, model: self.spec.model.clone() });
        }
        // The retained version keeps its pods while warm, and gets them back for an undo. With
        // replica ratios every pod of the rollout takes traffic, so it keeps none (it is cold).
        let ratio = self.spec.traffic_routing.kind() == RouterKind::ReplicaRatio;
        if let Some(r) = &self.st.retained
            && ((r.mode == RetentionMode::Warm && !ratio) || self.st.undo.is_some())
            && !self.st.pending_scale_downs.iter().any(|p| p.version == r.model.version && p.at.0 <= now)
        {
            actions.push(Action::EnsureWorkload { role: Role::Retained, model: r.model.clone() });
        }
        actions.push(Action::SetTraffic {
            stable_version: stable.version.clone(),
            candidate_version: if active { self.st.candidate_version.clone() } else { None },
            weight: if active { self.st.canary_weight } else { 0 },
            mirror_percent: if active { self.st.mirror_percent } else { 0 },
            matched: if active { self.st.match_.clone() } else { None },
        });
        let (due, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.st.pending_scale_downs).into_iter().partition(|p| p.at.0 <= now);
        self.st.pending_scale_downs = waiting;
        for p in due {
            // Never scale down what is serving.
            let serving = p.version == stable.version
                || (active && self.st.candidate_version.as_deref() == Some(p.version.as_str()))
                || self.st.undo.as_ref().is_some_and(|u| u.version == p.version);
            if !serving {
                actions.push(Action::ScaleDown { version: p.version });
            }
        }
        actions.append(&mut self.fx.actions);
        actions.append(&mut self.fx.events);
        wake.append(&mut self.fx.wake);
        if self.st.post_rollout.is_some() {
            wake.push(now.checked_add(WEBHOOK_POLL).unwrap_or(now));
        }
        set_conditions(&mut self.st, now);

        wake.extend(self.st.pending_scale_downs.iter().map(|p| p.at.0));
        if let Some(at) = next_analysis_at(self.spec, &self.st, self.analysis_slot) {
            wake.push(at);
        }
        // After a promotion: the watch's analyses, the retention's end, removals, and an undo
        // waiting for pods (Deployments are watched; this is the backstop).
        wake.extend(next_watch_analysis_at(self.spec, &self.st, self.analysis_slot));
        wake.extend(self.st.retained.iter().map(|r| r.until.0));
        wake.extend(self.st.retired.iter().filter_map(|r| r.remove_at.as_ref().map(|t| t.0)));
        if self.st.undo.is_some() {
            wake.push(now.checked_add(UNREADY_RECHECK).unwrap_or(now));
        }
        if active
            && let (Some(idx), Some(start)) = (self.st.stage_index, &self.st.stage_start_time)
            && let Some(min) = self.timings.stage_min.get(idx as usize)
        {
            wake.push(start.0.checked_add(*min).unwrap_or(start.0));
            if let Some(max) = self.spec.stages.get(idx as usize).and_then(|s| s.max_duration.as_ref()) {
                wake.push(start.0.checked_add(signed(max)).unwrap_or(start.0));
            }
        }
        if let Some(since) = &self.st.candidate_unready_since {
            wake.push(since.0.checked_add(self.timings.progress_deadline).unwrap_or(since.0));
            // Nothing watches pods, and a pod that cannot start (an image that cannot be pulled,
            // a crash loop) changes no Deployment status: look at the candidate's pods again soon,
            // to fail now and say why rather than at the deadline.
            wake.push(now.checked_add(UNREADY_RECHECK).unwrap_or(now));
        }
        let requeue_after = wake.into_iter().filter(|t| *t > now).min().map(|t| until(t, now));
        Decision { status: self.st, actions, requeue_after }
    }
}
