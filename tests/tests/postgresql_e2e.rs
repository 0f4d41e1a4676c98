//! The postgresql trigger end to end: rows in a real PostgreSQL table, the operator with its
//! embedded metrics adapter behind the real API server's aggregation layer, and the real
//! kube-controller-manager's HPA. ebb does 0↔1, the HPA 1↔N; the password comes from a Secret
//! through a TriggerAuthentication, and the role only reads.
//!
//! The external-metrics APIService is cluster-wide: this binary is in nextest's `apiservice`
//! test group, and [`AdapterCase`] keeps other test processes from taking it over.

use std::time::Duration;

use ebb_tests::adapter_case::AdapterCase;
use ebb_tests::postgres::{PgServer, create_password_auth};
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
    let case = AdapterCase::start("e2e-postgresql", WITHIN, &[]).await;
    let pg = PgServer::from_env(&case.env).unwrap_or_else(|e| panic!("{e}"));
    let client = case.client();
    let ns = &case.ns;

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

    case.deployment("worker", 0).await;
    case.create(
        "worker",
        json!({"scaleTargetRef": {"name": "worker"}, "pollingInterval": 1, "cooldownPeriod": 2,
               "maxReplicaCount": 10,
               "triggers": [{"type": "postgresql",
                   "metadata": {"query": format!("SELECT count(*) FROM {table}"),
                                "targetQueryValue": TARGET.to_string(),
                                "host": pg.host, "port": pg.port.to_string(), "userName": role,
                                "dbName": pg.db, "sslmode": "disable"},
                   "authenticationRef": {"name": "pg-auth"}}]}),
    )
    .await;

    case.wait_condition("worker", "Ready", "True").await;
    // An empty table: nothing scales.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(case.replicas("worker").await, 0);

    // 18 rows: ebb activates 0 → 1 (the HPA cannot leave 0), the HPA takes it to 4.
    admin
        .batch_execute(&format!(
            "INSERT INTO {table} SELECT generate_series(1, {BACKLOG})"
        ))
        .await
        .unwrap();
    let took = case.wait_replicas("worker", N).await;
    eprintln!("0 → {N} replicas in {took:?}");
    let value = case.metric_value("worker", "s0-postgresql").await;
    assert_eq!(
        value,
        Some(BACKLOG.to_string()),
        "s0-postgresql through the aggregator"
    );

    // Fewer rows: the HPA scales in to ceil(7 / 5) = 2.
    admin
        .batch_execute(&format!("DELETE FROM {table} WHERE n > 7"))
        .await
        .unwrap();
    case.wait_replicas("worker", 2).await;
    // No rows: the HPA goes to 1, ebb parks the worker at 0 after the cooldown.
    admin
        .batch_execute(&format!("DELETE FROM {table}"))
        .await
        .unwrap();
    let took = case.wait_replicas("worker", 0).await;
    eprintln!("back to 0 in {took:?}");

    case.finish().await;
    let _ = admin
        .batch_execute(&format!("DROP TABLE {table}; DROP ROLE {role};"))
        .await;
}
