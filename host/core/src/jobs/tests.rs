//! Live progress stays in memory; milestones reach the store; another
//! host reads a job's live progress through `job-progress`. Real cores with
//! their own stores, joined over the real mutual-TLS channel.

use super::{ImageJob, JobSpec};
use crate::model::{kind, JobRecord};
use crate::peer::tests::{join, start};
use nasvisor_api_types::{Action, Answer, ClusterCreate, JobView};
use std::time::Duration;

fn job_of(a: Answer) -> JobView {
    match a {
        Answer::Job(j) => j,
        other => panic!("not a job: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_does_not_touch_the_store_but_milestones_do_and_peers_read_both() {
    let tmp = tempfile::tempdir().unwrap();
    let a = start(tmp.path(), "a", None).await;
    let b = start(tmp.path(), "b", None).await;
    a.admin(Action::CreateCluster(ClusterCreate::default()))
        .await
        .unwrap();
    join(&a, &b).await;

    // A job running on b.
    let spec = JobSpec::ImageImport(ImageJob { name: "img".into() });
    let (rec, ctx) = b
        .inner
        .job_start(&spec, Some("image/img".into()))
        .await
        .unwrap();
    // Let the start settle everywhere, then report progress many times.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let revision = |c: &crate::NasCore| c.inner.db.get::<JobRecord>(kind::JOB, &rec.id).unwrap();
    let (_, before) = revision(&b);
    for i in 0..50 {
        ctx.progress(i as f64 / 100.0, Some("received 12 MiB"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (stored, after) = revision(&b);
    assert_eq!(after, before, "progress reports were committed");
    assert_eq!(stored.progress, 0.0);

    // Read on b (memory) and on a (asked of b).
    for (who, core) in [("b", &b), ("a", &a)] {
        let j = job_of(
            core.admin(Action::GetJob { id: rec.id.clone() })
                .await
                .unwrap(),
        );
        assert_eq!(j.progress, 0.49, "{who}: {j:?}");
        assert_eq!(j.message.as_deref(), Some("received 12 MiB"), "{who}");
        let Answer::Jobs(list) = core.admin(Action::ListJobs).await.unwrap() else {
            panic!("not a list of jobs")
        };
        let j = list.iter().find(|j| j.id == rec.id).expect("listed");
        assert_eq!(j.progress, 0.49, "{who}: list {j:?}");
    }

    // A milestone is committed (the latest of those close together).
    ctx.milestone(0.6, "converting");
    ctx.milestone(0.7, "checking");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (stored, after) = revision(&b);
    assert!(after > before, "the milestone was not committed");
    assert_eq!(stored.progress, 0.7);
    assert_eq!(stored.message.as_deref(), Some("checking"));

    // The end is committed, and reads show the record.
    b.inner.job_finish(&ctx, Ok("done".into())).await;
    let j = job_of(a.admin(Action::GetJob { id: rec.id }).await.unwrap());
    assert_eq!((j.progress, j.message.as_deref()), (1.0, Some("done")));
}
