//! A deployment's part in each reconciler pass: after the pass's plan is carried out,
//! [`evaluate`] follows every active deployment through real state (steps, progress) and
//! [`ending`] turns its verdict into what should happen to it. Both change nothing
//! outside the trackers; the pass's applier (`reconcile::apply`) stores, finishes and
//! rolls back. [`finish`] is that last action, shared with the API's cancel.

use berth_core::deployment::{Deployment, DeploymentState};
use berth_core::{AppId, DeploymentId};
use berth_store::AppVersion;

use super::track::Verdict;
use super::{Deployments, HISTORY, emit, now_ms, persist_or_report};
use crate::context::Ctx;
use crate::events::{EventKind, NewEvent, Note};
use crate::state::RealState;

/// What following the deployments found in one pass.
#[derive(Debug, Default)]
pub struct Progress {
    /// The steps to tell, in order.
    pub notes: Vec<Note>,
    /// Deployments that changed (steps or progress), to store.
    pub changed: Vec<Deployment>,
    /// Deployments that are done or failed, with their verdict.
    pub verdicts: Vec<(AppId, DeploymentId, Verdict)>,
}

/// The event about deployment `d`; its message starts with the deployment id.
pub fn note(kind: EventKind, d: &Deployment, message: &str) -> Note {
    Note {
        kind,
        about: NewEvent::app(&d.app),
        message: format!("{}: {message}", d.id),
    }
}

/// One look at every active deployment against real state (after the pass's plan was
/// recorded, so starts just ordered count).
pub fn evaluate(
    deployments: &Deployments,
    desired: &[AppVersion],
    state: &RealState,
    now_ms: u64,
) -> Progress {
    let mut out = Progress::default();
    let mut active = deployments.lock();
    for (app, t) in active.iter_mut() {
        let before = t.d.clone();
        let current = desired.iter().find(|a| &a.spec.id == app);
        let (verdict, said) = t.evaluate(current, state, now_ms);
        for message in said {
            out.notes
                .push(note(EventKind::DeploymentStep, &t.d, &message));
        }
        if t.d != before {
            out.changed.push(t.d.clone());
        }
        if verdict != Verdict::Continue {
            out.verdicts.push((app.clone(), t.d.id.clone(), verdict));
        }
    }
    out
}

/// What to do with a deployment that reached `verdict`.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    Finish(DeploymentState, Option<String>),
    /// It failed and may roll back: say so, then store the earlier version.
    RollBack {
        reason: String,
    },
}

pub fn ending(d: &Deployment, verdict: Verdict) -> Option<Ending> {
    match verdict {
        Verdict::Continue => None,
        Verdict::Done => Some(Ending::Finish(
            if d.state == DeploymentState::RollingBack {
                DeploymentState::RolledBack
            } else {
                DeploymentState::Succeeded
            },
            None,
        )),
        Verdict::Cancel(reason) => Some(Ending::Finish(DeploymentState::Cancelled, Some(reason))),
        Verdict::Fail(reason) => {
            let can_roll_back =
                d.state == DeploymentState::Running && d.rollback_on_failure && d.from.is_some();
            if can_roll_back {
                return Some(Ending::RollBack { reason });
            }
            let reason = if d.state == DeploymentState::RollingBack {
                format!("the rollback did not complete: {reason}")
            } else {
                reason
            };
            Some(Ending::Finish(DeploymentState::Failed, Some(reason)))
        }
    }
}

/// Ends the app's active deployment in `state`, stores it and tells.
pub async fn finish(
    ctx: &Ctx,
    app: &AppId,
    state: DeploymentState,
    reason: Option<String>,
) -> Option<Deployment> {
    let mut t = ctx.deployments.lock().remove(app)?;
    let now = now_ms();
    t.d.finish(state, now, reason.clone());
    persist_or_report(ctx, &t.d).await;
    let took = format!(
        "{:.1} s",
        now.saturating_sub(t.d.created_at_ms) as f64 / 1000.0
    );
    let (kind, message) = match state {
        DeploymentState::Succeeded => (
            EventKind::DeploymentSucceeded,
            format!("{} succeeded in {took}", t.d.app),
        ),
        DeploymentState::RolledBack => (
            EventKind::DeploymentRolledBack,
            format!(
                "{} rolled back to version {} in {took}{}",
                t.d.app,
                t.d.target().config_version,
                reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        ),
        DeploymentState::Failed => (
            EventKind::DeploymentFailed,
            format!("{} failed: {}", t.d.app, reason.unwrap_or_default()),
        ),
        _ => (
            EventKind::DeploymentCancelled,
            format!("{} cancelled: {}", t.d.app, reason.unwrap_or_default()),
        ),
    };
    emit(ctx, kind, &t.d, message);
    let store_app = app.clone();
    let _ = ctx
        .store
        .run(move |s| s.prune_deployments(&store_app, HISTORY))
        .await;
    Some(t.d)
}

#[cfg(test)]
mod tests {
    use berth_core::deployment::{DeploymentKind, Target};
    use berth_core::{AppId, VersionId};

    use super::*;

    fn deployment(from: bool, rollback: bool) -> Deployment {
        let target = |v| Target {
            version: VersionId(v),
            config_version: VersionId(v),
            instances: 1,
        };
        Deployment::new(
            AppId::parse("web").unwrap(),
            DeploymentKind::Update,
            from.then(|| target(1)),
            target(2),
            rollback,
            60_000,
            1_000,
        )
    }

    #[test]
    fn a_failed_deployment_rolls_back_only_when_it_can() {
        let fail = || Verdict::Fail("boom".into());
        assert_eq!(
            ending(&deployment(true, true), fail()),
            Some(Ending::RollBack {
                reason: "boom".into()
            })
        );
        assert_eq!(
            ending(&deployment(true, false), fail()),
            Some(Ending::Finish(DeploymentState::Failed, Some("boom".into())))
        );
        assert_eq!(
            ending(&deployment(false, true), fail()),
            Some(Ending::Finish(DeploymentState::Failed, Some("boom".into())))
        );
        let mut rolling = deployment(true, true);
        rolling.start_rollback(2_000, "boom".into());
        assert_eq!(
            ending(&rolling, fail()),
            Some(Ending::Finish(
                DeploymentState::Failed,
                Some("the rollback did not complete: boom".into())
            ))
        );
        assert_eq!(
            ending(&rolling, Verdict::Done),
            Some(Ending::Finish(DeploymentState::RolledBack, None))
        );
        assert_eq!(
            ending(&deployment(true, true), Verdict::Done),
            Some(Ending::Finish(DeploymentState::Succeeded, None))
        );
        assert_eq!(ending(&deployment(true, true), Verdict::Continue), None);
    }
}
