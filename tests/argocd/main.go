// argocd-health runs an Argo CD resource health check (Lua) the way Argo CD runs it:
// in gopher-lua (github.com/yuin/gopher-lua, the Lua Argo CD embeds), with the resource
// as the global `obj`, and prints what the script returns.
//
//	argocd-health SCRIPT.lua < objects.jsonl   # one resource (JSON) per line
//
// Each output line is the JSON of the returned table: {"status": ..., "message": ...},
// or {"error": ...} when the script fails. tests/unit/test_argocd_health.py and the
// e2e tests feed it the health checks of docs/install.md and real statuses.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	lua "github.com/yuin/gopher-lua"
)

func toLua(L *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []interface{}:
		table := L.NewTable()
		for _, item := range v {
			table.Append(toLua(L, item))
		}
		return table
	case map[string]interface{}:
		table := L.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(L, item))
		}
		return table
	}
	return lua.LString(fmt.Sprint(value))
}

func fromLua(value lua.LValue) interface{} {
	switch v := value.(type) {
	case *lua.LTable:
		out := map[string]interface{}{}
		v.ForEach(func(key, item lua.LValue) { out[key.String()] = fromLua(item) })
		return out
	case lua.LBool:
		return bool(v)
	case lua.LNumber:
		return float64(v)
	case *lua.LNilType:
		return nil
	}
	return value.String()
}

func health(script string, object map[string]interface{}) map[string]interface{} {
	L := lua.NewState(lua.Options{SkipOpenLibs: false})
	defer L.Close()
	L.SetGlobal("obj", toLua(L, object))
	if err := L.DoString(script); err != nil {
		return map[string]interface{}{"error": err.Error()}
	}
	returned := L.Get(-1)
	result, ok := fromLua(returned).(map[string]interface{})
	if !ok {
		return map[string]interface{}{"error": fmt.Sprintf("the script returned %s, not a table", returned.Type())}
	}
	return result
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-health SCRIPT.lua < objects.jsonl")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for scanner.Scan() {
		var object map[string]interface{}
		if err := json.Unmarshal(scanner.Bytes(), &object); err != nil {
			fmt.Fprintln(os.Stderr, "not a JSON object:", err)
			os.Exit(2)
		}
		if err := out.Encode(health(string(script), object)); err != nil {
			os.Exit(2)
		}
	}
}
