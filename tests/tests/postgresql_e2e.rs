//! The postgresql trigger end to end: rows in a real PostgreSQL table, the operator with its
//! embedded metrics adapter behind the real API server's aggregation layer, and the real
//! kube-controller-manager's HPA. ebb does 0↔1, the HPA 1↔N; the password comes from a Secret
//! through a TriggerAuthentication, and the role only reads.
//!
//! The external-metrics APIService is cluster-wide: this binary is in nextest's `apiservice`
//! test group, and [`ebb_tests::adapter::lock`] keeps other test processes from taking it over.

use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use ebb_tests::objects::{deployment, replicas};
use ebb_tests::operator::OperatorProcess;
use ebb_tests::postgres::{PgServer, create_password_auth};
use ebb_tests::{TestEnv, install_crds, wait_for};
use kube::api::{Api, PostParams};
use serde_json::json;

/// Rows per replica (`targetQueryValue`).
const TARGET: i64 = 5;
/// Replicas for [`BACKLOG`] rows.
const N: i32 = 4;
/// Rows for 4 replicas: `ceil(18 / 5)`.
const BACKLOG: i64 = 18;
/// Generous bound for anything that involves the HPA (2 s sync).
const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn postgresql_scales_zero_to_n_and_back_on_table_rows() {
    let _apiservice = ebb_tests::adapter::lock().await;
    let env = TestEnv::load().await.unwrap();
    let pg = PgServer::from_env(&env).unwrap_or_else(|e| panic!("{e}"));
    let client = env.client.clone();
    install_crds(&client).await.unwrap();
    let ns = env.namespace("e2e-postgresql").await.unwrap();
    ebb_tests::adapter::wait_until_free(&client).await;
    let port = ebb_tests::free_port();
    let addr = format!("127.0.0.1:{port}");
    let operator = OperatorProcess::start(&env, &ns.name, "op", &["--metrics-adapter-addr", &addr])
        .await
        .unwrap();
    ebb_tests::adapter::register(&client, &ns.name, port)
        .await
        .unwrap();

    // A table, and a role that may only read it, with its password in a Secret.
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let (table, role) = (
        format!("ebb_e2e_jobs_{suffix}"),
        format!("ebb_e2e_reader_{suffix}"),
    );
    let password = format!("pw-{suffix}");
    let admin = pg.table_with_rows(&table, 0).await.unwrap();
    pg.role(&role, &password).await.unwrap();
    create_password_auth(&client, &ns.name, "pg-auth", &password)
        .await
        .unwrap();

    deployment(&client, &ns.name, "worker", 0).await.unwrap();
    let so: ScaledObject = serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "worker"},
        "spec": {"scaleTargetRef": {"name": "worker"}, "pollingInterval": 1, "cooldownPeriod": 2,
                 "maxReplicaCount": 10,
                 "triggers": [{"type": "postgresql",
                     "metadata": {"query": format!("SELECT count(*) FROM {table}"),
                                  "targetQueryValue": TARGET.to_string(),
                                  "host": pg.host, "port": pg.port.to_string(), "userName": role,
                                  "dbName": pg.db, "sslmode": "disable"},
                     "authenticationRef": {"name": "pg-auth"}}]}
    }))
    .unwrap();
    let so_api: Api<ScaledObject> = Api::namespaced(client.clone(), &ns.name);
    // The CRD's resources answer 503 for a moment after the CRD is (re)created.
    wait_for("the ScaledObject created", Duration::from_secs(30), || async {
        so_api.create(&PostParams::default(), &so).await.ok().map(|_| ())
    })
    .await
    .unwrap();

    let at = |want: i32| {
        let (client, ns) = (client.clone(), ns.name.clone());
        async move {
            let start = Instant::now();
            wait_for(&format!("worker at {want}"), WITHIN, || {
                let (client, ns) = (client.clone(), ns.clone());
                async move { (replicas(&client, &ns, "worker").await.ok()? == want).then_some(()) }
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            start.elapsed()
        }
    };
    let ready = wait_for("Ready=True", WITHIN, || async {
        let status = so_api.get("worker").await.ok()?.status?;
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;
    assert!(
        ready.is_ok(),
        "{:?}",
        so_api.get("worker").await.ok().and_then(|s| s.status)
    );
    // An empty table: nothing scales.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas(&client, &ns.name, "worker").await.unwrap(), 0);

    // 18 rows: ebb activates 0 → 1 (the HPA cannot leave 0), the HPA takes it to 4.
    admin
        .batch_execute(&format!(
            "INSERT INTO {table} SELECT generate_series(1, {BACKLOG})"
        ))
        .await
        .unwrap();
    let took = at(N).await;
    eprintln!("0 → {N} replicas in {took:?}");
    let path = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/s0-postgresql?labelSelector=scaledobject.ebb.dev%2Fname%3Dworker",
        ns.name
    );
    let body = client
        .request_text(http::Request::get(&path).body(Vec::new()).unwrap())
        .await
        .unwrap();
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["items"][0]["value"], BACKLOG.to_string(), "{body}");

    // Fewer rows: the HPA scales in to ceil(7 / 5) = 2.
    admin
        .batch_execute(&format!("DELETE FROM {table} WHERE n > 7"))
        .await
        .unwrap();
    at(2).await;
    // No rows: the HPA goes to 1, ebb parks the worker at 0 after the cooldown.
    admin
        .batch_execute(&format!("DELETE FROM {table}"))
        .await
        .unwrap();
    let took = at(0).await;
    eprintln!("back to 0 in {took:?}");

    so_api.delete("worker", &Default::default()).await.unwrap();
    wait_for("the ScaledObject finalized", WITHIN, || async {
        matches!(so_api.get_opt("worker").await, Ok(None)).then_some(())
    })
    .await
    .unwrap();
    ebb_tests::adapter::unregister(&client).await;
    operator.terminate().await;
    ns.delete().await.unwrap();
    let _ = admin
        .batch_execute(&format!("DROP TABLE {table}; DROP ROLE {role};"))
        .await;
}
