"""Validate OpenLineage events (NDJSON files named on the command line) against the
OpenLineage project's own model of the spec: the classes of `openlineage-python`
(`openlineage.client.generated`), which the project generates from the spec's JSON Schemas.

Every object must have exactly the keys its class has (no unknown key, every required one),
every value the type its class declares, every `schemaURL`/`_schemaURL` the URL of the class
it claims to be (the spec and facet versions), and every facet a facet the spec defines under
that key for that place (run, job, dataset, input dataset, output dataset). The classes'
validators run too (ISO-8601 times with a time part, UUID run ids).

Prints `ok <n>` and exits 0, or prints each problem and exits 1.
"""

import enum
import json
import sys
import types
import typing

import attr
from openlineage.client.generated import (
    base,
    column_lineage_dataset,
    data_quality_assertions_dataset,
    documentation_dataset,
    documentation_job,
    error_message_run,
    input_statistics_input_dataset,
    job_type_job,
    nominal_time_run,
    output_statistics_output_dataset,
    parent_run,
    processing_engine_run,
    schema_dataset,
    sql_job,
    tags_run,
)

# The facets the spec defines, by where they go and the key they go under.
FACETS = {
    base.RunFacet: {
        "parent": parent_run.ParentRunFacet,
        "errorMessage": error_message_run.ErrorMessageRunFacet,
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet,
        "nominalTime": nominal_time_run.NominalTimeRunFacet,
        "tags": tags_run.TagsRunFacet,
    },
    base.JobFacet: {
        "jobType": job_type_job.JobTypeJobFacet,
        "sql": sql_job.SQLJobFacet,
        "documentation": documentation_job.DocumentationJobFacet,
    },
    base.DatasetFacet: {
        "schema": schema_dataset.SchemaDatasetFacet,
        "columnLineage": column_lineage_dataset.ColumnLineageDatasetFacet,
        "documentation": documentation_dataset.DocumentationDatasetFacet,
        # The spec's class derives from InputDatasetFacet, but consumers (Marquez, the Airflow
        # provider) read it as a facet of the dataset that was checked: weir's checks check a
        # task's output, so that is where it goes.
        "dataQualityAssertions": data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet,
    },
    base.InputDatasetFacet: {
        "inputStatistics": input_statistics_input_dataset.InputStatisticsInputDatasetFacet,
        "dataQualityAssertions": data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet,
    },
    base.OutputDatasetFacet: {
        "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet,
    },
}


class Invalid(Exception):
    pass


def field_type(cls, name):
    """The annotation of field `name`, evaluated in the module of the class declaring it."""
    for c in cls.__mro__:
        ann = c.__dict__.get("__annotations__", {})
        if name in ann:
            t = ann[name]
            return eval(t, vars(sys.modules[c.__module__])) if isinstance(t, str) else t
    raise Invalid(f"{cls.__name__}.{name} has no annotation")


def check_type(tp, value, path):
    """Check `value` against the annotation `tp`; returns the value to construct with."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise Invalid(f"{path}: unsupported union {tp}")
        return check_type(rest[0], value, path)
    if origin is list:
        if not isinstance(value, list):
            raise Invalid(f"{path}: expected a list, got {value!r}")
        return [check_type(args[0], v, f"{path}[{k}]") for k, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise Invalid(f"{path}: expected an object, got {value!r}")
        item = args[1]
        if isinstance(item, type) and item in FACETS:
            return {k: facet(item, k, v, f"{path}.{k}") for k, v in value.items()}
        return {k: check_type(item, v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise Invalid(f"{path}: {value!r} is not one of {[e.value for e in tp]}")
    if attr.has(tp):
        return structure(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise Invalid(f"{path}: expected a boolean, got {value!r}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise Invalid(f"{path}: expected a number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise Invalid(f"{path}: expected a string, got {value!r}")
        return value
    if tp is typing.Any:
        return value
    raise Invalid(f"{path}: unsupported type {tp}")


def facet(where, key, value, path):
    cls = FACETS[where].get(key)
    if cls is None:
        raise Invalid(f"{path}: `{key}` is not a facet the spec defines for {where.__name__}")
    return structure(cls, value, path)


def structure(cls, value, path):
    """`value` as an instance of the attrs class `cls`, strictly."""
    if not isinstance(value, dict):
        raise Invalid(f"{path}: expected an object for {cls.__name__}, got {value!r}")
    fields = {a.name: a for a in attr.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise Invalid(f"{path}: {cls.__name__} has no key {unknown}")
    kwargs = {}
    for name, a in fields.items():
        if name not in value:
            if a.default is attr.NOTHING and a.init:
                raise Invalid(f"{path}: {cls.__name__} needs `{name}`")
            continue
        if not a.init:
            # schemaURL / _schemaURL: the class's own URL (spec or facet version).
            if value[name] != cls._get_schema():
                raise Invalid(f"{path}.{name}: {value[name]!r} is not {cls.__name__}'s {cls._get_schema()!r}")
            continue
        kwargs[a.alias] = check_type(field_type(cls, name), value[name], f"{path}.{name}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise Invalid(f"{path}: {cls.__name__}: {e}")


def main(paths):
    problems = []
    n = 0
    for p in paths:
        with open(p) as f:
            for k, line in enumerate(f, 1):
                if not line.strip():
                    problems.append(f"{p}:{k}: an empty line")
                    continue
                n += 1
                try:
                    structure(base.RunEvent, json.loads(line), f"{p}:{k}")
                except (Invalid, json.JSONDecodeError) as e:
                    problems.append(str(e))
    if problems:
        print("\n".join(problems))
        return 1
    print(f"ok {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
