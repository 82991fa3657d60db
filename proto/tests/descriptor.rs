//! `FILE_DESCRIPTOR_SET`, which server reflection serves: every `.proto` file of package
//! `flagstaff.v1`, both services with their methods, and the comments of the contract.

use prost::Message as _;
use prost_types::FileDescriptorSet;

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(flagstaff_proto::FILE_DESCRIPTOR_SET).expect("decodes")
}

#[test]
fn it_describes_every_file_and_both_services() {
    let set = descriptor_set();
    let mut files: Vec<_> = set.file.iter().map(|f| f.name()).collect();
    files.sort();
    assert_eq!(
        files,
        [
            "flagstaff/v1/admin.proto",
            "flagstaff/v1/model.proto",
            "flagstaff/v1/sync.proto"
        ]
    );
    assert!(set.file.iter().all(|f| f.package() == "flagstaff.v1"));

    let services: Vec<_> = set
        .file
        .iter()
        .flat_map(|f| &f.service)
        .map(|s| (s.name(), s.method.len()))
        .collect();
    let names: Vec<_> = services.iter().map(|(name, _)| *name).collect();
    assert_eq!(names.len(), 2);
    assert!(
        names.contains(&"Admin") && names.contains(&"Sync"),
        "{names:?}"
    );
    assert!(services.iter().all(|(_, methods)| *methods > 0));
}

#[test]
fn it_keeps_the_contract_s_comments() {
    let set = descriptor_set();
    let admin = set
        .file
        .iter()
        .find(|f| f.name() == "flagstaff/v1/admin.proto")
        .expect("admin.proto");
    let info = admin.source_code_info.as_ref().expect("source info");
    assert!(
        info.location.iter().any(|l| l
            .leading_comments()
            .contains("The new state of the kill switch")),
        "SetFlagEnabledRequest.enabled's comment is described"
    );
}
