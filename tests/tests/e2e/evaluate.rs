//! Server-side evaluation gives the engine's answers, bucket included.

use flagstaff_engine::{Context, Document, Snapshot};
use flagstaff_proto::pb;
use flagstaff_tests::TestServer;
use serde_json::json;
use tonic::Code;

use crate::fixtures::{boolean_flag, create_environment, create_flag, flag, refused};

#[tokio::test]
async fn evaluation_gives_the_engines_answer() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    create_flag(&mut admin, "staging", boolean_flag("a-simple")).await;
    create_flag(
        &mut admin,
        "staging",
        flag(json!({
            "key": "checkout", "kind": "string",
            "variants": {"new": "v2", "old": "v1"}, "off_variant": "old", "enabled": true,
            "rules": [{"id": "dutch", "conditions": [{"attribute": "country", "op": "in", "values": ["NL"]}],
                       "serve": {"variant": "new"}}],
            "default": {"split": {"weights": [{"variant": "new", "weight": 10000},
                                              {"variant": "old", "weight": 90000}]}},
        })),
    )
    .await;
    // The engine, on the environment as exported.
    let exported = admin
        .export(pb::ExportRequest {
            environment: "staging".into(),
        })
        .await
        .expect("export")
        .into_inner()
        .document
        .expect("document");
    let engine =
        Snapshot::from_document(Document::try_from(exported).expect("converts")).expect("valid");

    let contexts = [
        Context::new("user-1"),
        Context::new("user-2").with("country", "NL"),
        Context::new("user-3").with("country", "DE"),
        Context::new(""),
    ];
    for ctx in &contexts {
        let evaluations = admin
            .evaluate(pb::EvaluateRequest {
                environment: "staging".into(),
                flag: "checkout".into(),
                context: Some(pb::Context::from(ctx)),
            })
            .await
            .expect("evaluated")
            .into_inner()
            .evaluations;
        let expected = engine.evaluate("checkout", ctx);
        assert_eq!(
            evaluations,
            [pb::Evaluation {
                flag: "checkout".into(),
                value_json: expected.value.to_string(),
                variant: expected.variant.expect("a variant").to_owned(),
                reason: Some(pb::Reason::from(expected.reason)),
                version: 2,
                bucket: expected.bucket,
            }],
            "context {:?}",
            ctx.key()
        );
    }

    // The split decides for contexts outside the rule, and says which bucket it used.
    let outside = admin
        .evaluate(pb::EvaluateRequest {
            environment: "staging".into(),
            flag: "checkout".into(),
            context: Some(pb::Context::from(&contexts[0])),
        })
        .await
        .expect("evaluated")
        .into_inner();
    assert!(outside.evaluations[0].bucket.is_some());
    assert_eq!(
        outside.evaluations[0].reason.as_ref().expect("reason").kind,
        pb::ReasonKind::Default as i32
    );
    assert_eq!(outside.revision, 2);
}

#[tokio::test]
async fn every_flag_is_evaluated_when_none_is_named() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    create_environment(&mut admin, "staging").await;
    create_flag(&mut admin, "staging", boolean_flag("b")).await;
    create_flag(&mut admin, "staging", boolean_flag("a")).await;

    let all = admin
        .evaluate(pb::EvaluateRequest {
            environment: "staging".into(),
            flag: String::new(),
            context: Some(pb::Context::default()),
        })
        .await
        .expect("evaluated")
        .into_inner();
    let results: Vec<(&str, &str, &str)> = all
        .evaluations
        .iter()
        .map(|e| (e.flag.as_str(), e.variant.as_str(), e.value_json.as_str()))
        .collect();
    assert_eq!(results, [("a", "off", "false"), ("b", "off", "false")]);

    let message = refused(
        admin
            .evaluate(pb::EvaluateRequest {
                environment: "staging".into(),
                flag: "nope".into(),
                context: Some(pb::Context::default()),
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(message, "no flag \"nope\" in environment \"staging\"");
}
