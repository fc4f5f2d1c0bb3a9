"""A small code location for the demo's runs (testworld/location_runs.py) and its console story: curate and train
assets like the pipeline's, one that fails, a check, and a partitioned one."""

import dagster as dg


@dg.asset(group_name="ingest", partitions_def=dg.StaticPartitionsDefinition(["post", "like"]))
def raw_records(context: dg.AssetExecutionContext) -> dg.MaterializeResult[None]:
    return dg.MaterializeResult(metadata={"partition_seen": context.partition_key})


@dg.asset(group_name="curate")
def chat_dataset() -> dg.MaterializeResult[None]:
    dg.get_dagster_logger().info("a line for the log only")
    return dg.MaterializeResult(metadata={"train_examples": 1062, "val_examples": 21, "dataset_bytes": 7435647})


@dg.asset(group_name="train", deps=[chat_dataset])
def lora_adapter() -> dg.MaterializeResult[None]:
    return dg.MaterializeResult(metadata={"steps": 24, "val_loss_before": 4.2414, "val_loss_after": 2.2699})


@dg.asset(group_name="train", deps=[lora_adapter])
def merged_model() -> None:
    raise ValueError("no space left on device")


@dg.asset_check(asset=chat_dataset)
def chat_dataset_has_no_split_leak() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


defs = dg.Definitions(
    assets=[raw_records, chat_dataset, lora_adapter, merged_model], asset_checks=[chat_dataset_has_no_split_leak]
)
