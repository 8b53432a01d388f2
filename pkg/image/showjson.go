package image

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// WriteShowJSON renders v (a Checkpoint, a record, or any value built of
// the image's types) as indented JSON for people and tools, as `cr show
// --json` prints it. It follows the records' JSON field names, with one
// difference from the image's own encoding (and from WriteJSON): every
// 64-bit value that can exceed 2^53 is a string in hex, so that a tool that
// reads JSON numbers as float64 (jq, JavaScript) gets every value exactly:
// a 64-bit unsigned value (addresses, registers, masks, rlimits, inode and
// device numbers) always, "0x7ffd1000"; a 64-bit signed value (times in
// nanoseconds, sizes, offsets) when beyond ±2^53, "0x18ecccd99cdc13a3" or
// "-0x20000000000001", and a plain number otherwise (mtime_ns, nanoseconds
// since 1970, is always beyond: 2^53 ns is 104 days). Each string reads
// back with strconv.ParseUint/ParseInt(s, 0, 64) or Python's int(s, 0).
// CRIU's crit prints addresses and registers as hex strings for the same
// reason.
// []byte stays base64, as in the image.
func WriteShowJSON(w io.Writer, v any) error {
	bw := bufio.NewWriter(w)
	e := &showEncoder{w: bw}
	e.value(reflect.ValueOf(v), 0)
	bw.WriteString("\n")
	if e.err != nil {
		return e.err
	}
	return bw.Flush()
}

type showEncoder struct {
	w   *bufio.Writer
	err error
}

// exactInt is the largest magnitude a float64 holds exactly (2^53).
const exactInt = 1 << 53

func (e *showEncoder) str(s string) {
	b, _ := json.Marshal(s)
	e.w.Write(b)
}

func (e *showEncoder) indent(depth int) {
	e.w.WriteString("\n")
	e.w.WriteString(strings.Repeat("  ", depth))
}

func (e *showEncoder) value(v reflect.Value, depth int) {
	if !v.IsValid() {
		e.w.WriteString("null")
		return
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			e.w.WriteString("null")
			return
		}
		e.value(v.Elem(), depth)
	case reflect.Bool:
		e.w.WriteString(strconv.FormatBool(v.Bool()))
	case reflect.Uint64, reflect.Uintptr:
		e.str("0x" + strconv.FormatUint(v.Uint(), 16))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32:
		e.w.WriteString(strconv.FormatUint(v.Uint(), 10))
	case reflect.Int64, reflect.Int:
		n := v.Int()
		if n > exactInt || n < -exactInt {
			if n < 0 {
				e.str("-0x" + strconv.FormatUint(-uint64(n), 16))
			} else {
				e.str("0x" + strconv.FormatUint(uint64(n), 16))
			}
		} else {
			e.w.WriteString(strconv.FormatInt(n, 10))
		}
	case reflect.Int8, reflect.Int16, reflect.Int32:
		e.w.WriteString(strconv.FormatInt(v.Int(), 10))
	case reflect.Float32, reflect.Float64:
		b, err := json.Marshal(v.Float())
		if err != nil && e.err == nil {
			e.err = err
		}
		e.w.Write(b)
	case reflect.String:
		e.str(v.String())
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			e.w.WriteString("null")
			return
		}
		if v.Type().Elem().Kind() == reflect.Uint8 && v.Kind() == reflect.Slice {
			e.str(base64.StdEncoding.EncodeToString(v.Bytes()))
			return
		}
		if v.Len() == 0 {
			e.w.WriteString("[]")
			return
		}
		e.w.WriteString("[")
		for i := 0; i < v.Len(); i++ {
			if i > 0 {
				e.w.WriteString(",")
			}
			e.indent(depth + 1)
			e.value(v.Index(i), depth+1)
		}
		e.indent(depth)
		e.w.WriteString("]")
	case reflect.Map:
		if v.IsNil() {
			e.w.WriteString("null")
			return
		}
		keys := v.MapKeys()
		names := make([]string, len(keys))
		for i, k := range keys {
			names[i] = fmt.Sprint(k.Interface())
		}
		idx := make([]int, len(keys))
		for i := range idx {
			idx[i] = i
		}
		sort.Slice(idx, func(a, b int) bool { return names[idx[a]] < names[idx[b]] })
		e.w.WriteString("{")
		for n, i := range idx {
			if n > 0 {
				e.w.WriteString(",")
			}
			e.indent(depth + 1)
			e.str(names[i])
			e.w.WriteString(": ")
			e.value(v.MapIndex(keys[i]), depth+1)
		}
		if len(idx) > 0 {
			e.indent(depth)
		}
		e.w.WriteString("}")
	case reflect.Struct:
		fields := showFields(v)
		if len(fields) == 0 {
			e.w.WriteString("{}")
			return
		}
		e.w.WriteString("{")
		for n, f := range fields {
			if n > 0 {
				e.w.WriteString(",")
			}
			e.indent(depth + 1)
			e.str(f.name)
			e.w.WriteString(": ")
			e.value(f.v, depth+1)
		}
		e.indent(depth)
		e.w.WriteString("}")
	default:
		if e.err == nil {
			e.err = fmt.Errorf("show json: cannot render a %s", v.Type())
		}
		e.w.WriteString("null")
	}
}

type showField struct {
	name string
	v    reflect.Value
}

// showFields lists a struct's fields as encoding/json would: by their json
// tag names, "-" and unexported fields left out, omitempty honoured, the
// fields of an untagged embedded struct inlined.
func showFields(v reflect.Value) []showField {
	var out []showField
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		fv := v.Field(i)
		if sf.Anonymous && name == "" {
			ft := sf.Type
			if ft.Kind() == reflect.Pointer {
				if fv.IsNil() {
					continue
				}
				fv, ft = fv.Elem(), ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				out = append(out, showFields(fv)...)
				continue
			}
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		if strings.Contains(","+opts+",", ",omitempty,") && isEmptyJSON(fv) {
			continue
		}
		out = append(out, showField{name, fv})
	}
	return out
}

// isEmptyJSON is encoding/json's notion of an empty value for omitempty.
func isEmptyJSON(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Bool:
		return !v.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int() == 0
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return v.Uint() == 0
	case reflect.Float32, reflect.Float64:
		return v.Float() == 0
	case reflect.Interface, reflect.Pointer:
		return v.IsNil()
	}
	return false
}
