# conduit_kvm_tests(TARGET LABEL label [PROPERTIES ...]): gtest_discover_tests for a binary whose
# tests need KVM. Each test goes through tests/bed/kvm-test.sh (the target's CROSSCOMPILING_EMULATOR,
# which gtest_discover_tests puts in front of every test command) and requires the kvm_bed fixture:
# on this machine's KVM when it can run a guest, else in the nested-KVM bed, never skipped.
function(conduit_kvm_tests target)
  cmake_parse_arguments(arg "" "LABEL" "PROPERTIES" ${ARGN})
  set_target_properties(${target} PROPERTIES
    CROSSCOMPILING_EMULATOR "${CONDUIT_BED_DIR}/kvm-test.sh;${PROJECT_BINARY_DIR};kvm")
  gtest_discover_tests(${target}
    PROPERTIES LABELS ${arg_LABEL} FIXTURES_REQUIRED kvm_bed ${arg_PROPERTIES}
    DISCOVERY_TIMEOUT 60)
endfunction()

# conduit_bed_test(NAME name LABEL label [ARCH arm64 [BED vsmmu]] COMMAND ...): a test that runs only
# inside the bed (it needs L1's real VFIO devices), whatever this machine has. ARCH arm64: inside the
# arm64 bed (fixture kvm_bed_arm64; the command runs in an arm64 L1, so it names arm64 programs or
# scripts). BED vsmmu: inside the arm64 bed's UEFI + ACPI flavour with the nested SMMUv3 (fixture
# kvm_bed_vsmmu, bed.sh --arch arm64 --vsmmu; issue 13).
function(conduit_bed_test)
  cmake_parse_arguments(arg "" "NAME;LABEL;TIMEOUT;ARCH;BED" "COMMAND" ${ARGN})
  set(place bed)
  set(fixture kvm_bed)
  if(arg_ARCH STREQUAL "arm64")
    set(place arm64)
    set(fixture kvm_bed_arm64)
  elseif(arg_ARCH)
    message(FATAL_ERROR "conduit_bed_test(${arg_NAME}): no bed for ARCH ${arg_ARCH}")
  endif()
  if(arg_BED STREQUAL "vsmmu" AND place STREQUAL "arm64")
    set(place vsmmu)
    set(fixture kvm_bed_vsmmu)
  elseif(arg_BED)
    message(FATAL_ERROR "conduit_bed_test(${arg_NAME}): no bed ${arg_BED} for ARCH ${arg_ARCH} (BED vsmmu needs ARCH arm64)")
  endif()
  add_test(NAME ${arg_NAME} COMMAND ${CONDUIT_BED_DIR}/kvm-test.sh ${PROJECT_BINARY_DIR} ${place} ${arg_COMMAND})
  set_tests_properties(${arg_NAME} PROPERTIES LABELS "${arg_LABEL}" FIXTURES_REQUIRED ${fixture})
  if(arg_TIMEOUT)
    set_tests_properties(${arg_NAME} PROPERTIES TIMEOUT ${arg_TIMEOUT})
  endif()
endfunction()
